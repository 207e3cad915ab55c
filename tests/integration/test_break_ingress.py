"""The Ingress exercise as a learner does it on a real lab (scenarios/ingress.yaml): `netlab break
--random --seed N` flips a path's pathType in the running nginx.conf and reloads nginx, a real
curl from the outside world is answered by another Service, the hints name the controller's
namespace and `nginx -T`, the learner writes the conf back and reloads nginx by hand (the
commands of Broken.fix), and `netlab check` grades it fixed; `down` leaves nothing."""

from __future__ import annotations

import subprocess
import sys

from breakit import seed_for, until_ok
from conftest import ROOT, SCENARIOS, in_ns, lab_fixture, netlab, requires_root
from netlab import exercises as E, model
from netlab.runtime.state import LabState

pytestmark = requires_root

lab = lab_fixture("ifrt")

INGRESS = str(SCENARIOS / "ingress.yaml")
FAULT = "ingress-path-type"


def answer(the_lab, path: str) -> str:
    """Whose pod answers a real request from the outside world (netexec --any-path says its
    name): the Deployment's name."""
    r = in_ns(the_lab.outside.ns, "curl", "-s", "-m", "5", "-H", "Host: shop.example.com",
              f"http://203.0.113.201{path}")
    assert r.returncode == 0, r.stderr
    return r.stdout.strip().rsplit("-", 2)[0]       # fallback-5f79654599-wdwdl: fallback


def location_lines(broken) -> list[str]:
    """The location lines `nginx -T` shows in the controller's namespace (the hint's command)."""
    proc = subprocess.run(broken.look, shell=True, capture_output=True, text=True, timeout=20)
    assert proc.returncode == 0, proc.stderr
    return [line.split(":", 1)[1].strip() for line in proc.stdout.splitlines()
            if "location " in line and ":" in line and "#" not in line]


def test_round_trip_break_hint_fix_the_conf_by_hand_check(lab, tmp_path):
    netlab("up", INGRESS, "--name", lab)
    the_lab = model.load(INGRESS, lab)
    seed, target = seed_for(the_lab, FAULT)
    broken = E.fault_of(FAULT).make(the_lab, target)
    path = broken.obj.split()[-1]            # location /api/ -> /api/
    below = path + "x"
    healthy = answer(the_lab, below)

    told = netlab("break", lab, "--random", "--seed", str(seed)).stdout
    assert "Symptom:" in told and FAULT not in told and f"seed {seed}" in told
    assert f"curl shop.example.com{below} from outside is not answered by Service" in told
    record = LabState(lab).journal().faults[-1]
    assert (record["fault"], record["on"], record["hidden"]) == (FAULT, target, True)

    # nginx really runs the flipped conf: another Service answers below the path
    wrong = answer(the_lab, below)
    assert wrong != healthy, (healthy, wrong)
    flipped_has = f"{broken.obj} {{" in open(the_lab.ingress.conf_path).read()
    assert (f"{broken.obj} {{" in location_lines(broken)) == flipped_has

    hints = [netlab("hint", lab).stdout for _ in range(3)]
    assert "checks fail" in hints[0] and f"shop.example.com{below}" in hints[0]
    assert f"the packet stops in namespace {broken.ns}" in hints[1]
    assert f"look with: {broken.look}" in hints[2]
    assert netlab("check", lab, check=False).returncode == 1       # not fixed yet

    # the fix by hand: the conf the model renders written back, nginx told to reload it
    fix = broken.fix.replace("netlab show", f"{sys.executable} -m netlab show")
    subprocess.run(fix, shell=True, check=True, capture_output=True, text=True, timeout=30,
                   cwd=ROOT)
    done = until_ok("check", lab, "--junit", str(tmp_path / "grade.xml"))
    assert f"The fault was {FAULT} on {target}" in done.stdout and "with 3 hints" in done.stdout
    assert answer(the_lab, below) == healthy
    assert (f"{broken.obj} {{" in location_lines(broken)) != flipped_has
    finished = LabState(lab).journal()
    assert finished.faults == [] and finished.finished[-1]["ended"] == "fixed"
