"""Regenerate the `nft -j list ruleset` fixtures from the rulesets beside them, with the real nft.

Each NAME.nft (NAME.rules: iptables-restore input, which iptables-nft turns into nft tables with
`xt` compat expressions) is loaded into a throwaway network namespace of its own (never the
root one) and
`nft -j list ruleset` is written to NAME.json, `nft -a list ruleset` (the rules as nft prints
them, with their handles) to NAME.txt. Run as root: /opt/netlab/bin/python capture.py
"""

from __future__ import annotations

import subprocess
import sys
import uuid
from pathlib import Path

HERE = Path(__file__).resolve().parent


def capture(text: str, loader: tuple[str, ...] = ("nft", "-f", "-")) -> tuple[str, str]:
    """`nft -j list ruleset` and `nft -a list ruleset` of `text` loaded into a fresh namespace
    (removed afterwards)."""
    ns = f"trc-cap-{uuid.uuid4().hex[:8]}"
    subprocess.run(["ip", "netns", "add", ns], check=True)
    try:
        subprocess.run(["ip", "netns", "exec", ns, *loader], input=text, text=True,
                       check=True, capture_output=True)
        return tuple(subprocess.run(["ip", "netns", "exec", ns, "nft", flag, "list", "ruleset"],
                                    check=True, capture_output=True, text=True).stdout
                     for flag in ("-j", "-a"))
    finally:
        subprocess.run(["ip", "netns", "del", ns], check=True)


if __name__ == "__main__":
    paths = sorted([*HERE.glob("*.nft"), *HERE.glob("*.rules")])
    for path in paths if len(sys.argv) < 2 else map(Path, sys.argv[1:]):
        loader = ("iptables-restore",) if path.suffix == ".rules" else ("nft", "-f", "-")
        as_json, as_text = capture(path.read_text(), loader)
        path.with_suffix(".json").write_text(as_json)
        path.with_suffix(".txt").write_text(as_text)
        print(f"wrote {path.with_suffix('.json')} and .txt")
