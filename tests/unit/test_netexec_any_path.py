"""netexec's opt-in --any-path and its /headers endpoint (used behind an ingress)."""

from netlab.netexec import answer

CLIENT = ("10.0.0.1", 40000)


def test_default_behaviour_is_unchanged():
    assert answer("/api/x", "web", CLIENT) == (404, "not found")
    assert answer("/", "web", CLIENT) == (200, "ok")
    assert answer("/hostname", "web", CLIENT) == (200, "web")


def test_any_path_answers_the_name():
    assert answer("/api/x", "web", CLIENT, any_path=True) == (200, "web")
    assert answer("/", "web", CLIENT, any_path=True) == (200, "web")
    assert answer("/healthz", "web", CLIENT, any_path=True) == (200, "ok")
    assert answer("/clientip", "web", CLIENT, any_path=True) == (200, "10.0.0.1:40000")


def test_headers_are_echoed():
    head = "Host: shop.example.com\nX-Forwarded-For: 10.0.0.9"
    assert answer("/headers", "web", CLIENT, head) == (200, head)
