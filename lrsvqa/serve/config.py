"""Settings of one ``lrsvqa serve`` process, and the bind-address safety rule."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from pathlib import Path

from lrsvqa.errors import ConfigError

TOKEN_ENV = "LRSVQA_TOKEN"
DEFAULT_MAX_QUEUE = 16
DEFAULT_MAX_BODY = 64 * 1024  # bytes of one request body
DEFAULT_KEEP_JOBS = 500  # finished jobs whose results stay available


@dataclass(frozen=True)
class ServeConfig:
    """Where scenes come from and how the service protects itself."""

    root: Path  # a str is accepted and resolved
    allow_urls: tuple[str, ...] = ()
    token: str | None = None
    cors: tuple[str, ...] = ()
    max_queue: int = DEFAULT_MAX_QUEUE  # jobs waiting behind the running one
    max_body: int = DEFAULT_MAX_BODY
    keep_jobs: int = DEFAULT_KEEP_JOBS
    max_new_tokens: int = 32  # the most a request may ask for
    extra: dict[str, str] = field(default_factory=dict)  # shown on /api/health

    def __post_init__(self) -> None:
        root = Path(self.root)
        if not root.is_dir():
            raise ConfigError(f"--root {self.root}: not a folder; give the folder of your scenes")
        object.__setattr__(self, "root", root.resolve())
        if self.max_queue < 0:
            raise ConfigError(f"--queue {self.max_queue}: must be 0 or more")
        if self.max_body < 1024:
            raise ConfigError(f"the body limit {self.max_body} is below 1 KiB")
        if self.keep_jobs < 1:
            raise ConfigError(f"--keep-jobs {self.keep_jobs}: must be at least 1")
        if self.token is not None and len(self.token) < 8:
            raise ConfigError("the token is shorter than 8 characters; use a long random one")
        for prefix in self.allow_urls:
            if not prefix.startswith(("http://", "https://")) or prefix.count("/") < 3:
                raise ConfigError(
                    f"--allow-url {prefix!r}: give an http(s) prefix with a host and a path, "
                    "such as https://example.com/scenes/"
                )


def is_loopback(host: str) -> bool:
    """True for addresses only this machine can reach (127.0.0.0/8, ::1, localhost)."""
    if host.strip().lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_bind(host: str, token: str | None) -> None:
    """Refuse to expose the service beyond this machine without a token."""
    if not is_loopback(host) and not token:
        raise ConfigError(
            f"--host {host} makes the service reachable from other machines; give a token "
            f"with --token or ${TOKEN_ENV} (every request then needs 'Authorization: Bearer "
            "<token>'), or bind 127.0.0.1"
        )
