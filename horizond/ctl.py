"""`horizonctl`: talk to a running horizond over its control socket."""

from __future__ import annotations

import argparse
import json
import os
import socket
import sys

from .cli import load
from .config import ConfigError

EXIT_RUNNING, EXIT_PAUSED, EXIT_NOT_RUNNING = 0, 1, 2
SERVICE_SOCKET = "/run/horizond/horizond.sock"


class NotRunning(Exception):
    pass


def find_socket(args) -> str:
    if args.socket:
        return args.socket
    if os.environ.get("HORIZOND_SOCKET"):
        return os.environ["HORIZOND_SOCKET"]
    try:
        configured = load(args.config).socket_path
    except (ConfigError, OSError) as exc:
        raise SystemExit(f"horizonctl: cannot find the control socket: {exc}") from None
    # An operator's default differs from the service's: try the service's too.
    for candidate in (configured, SERVICE_SOCKET):
        if os.path.exists(candidate):
            return candidate
    return configured


def request(path: str, cmd: str, timeout: float = 10.0, **args) -> dict:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    try:
        sock.connect(path)
    except (FileNotFoundError, ConnectionRefusedError) as exc:
        raise NotRunning(f"horizond is not running (no daemon on {path}: {exc.strerror})") from None
    except PermissionError:
        raise SystemExit(f"horizonctl: permission denied on {path}") from None
    with sock:
        sock.sendall(json.dumps({"v": 1, "cmd": cmd, "args": args}).encode() + b"\n")
        data = b""
        while not data.endswith(b"\n"):
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
    if not data:
        raise NotRunning(f"horizond closed the connection on {path} without answering")
    return json.loads(data)


def _result(response: dict) -> dict:
    if not response.get("ok"):
        raise SystemExit(f"horizonctl: {response.get('error', 'unknown error')}")
    return response["result"]


def print_status(status: dict) -> None:
    redis = status["redis"]
    print(f"horizond {status['state']} (pid {status['pid']}, up {status['uptime']:.0f}s, config {status['config']})")
    print(f"redis {redis['url']}: {'ok' if redis['ok'] else 'UNREACHABLE ' + str(redis['error'])}")
    print(f"{'SUPERVISOR':<20} {'STATE':<9} {'PROCS':>5} {'BUSY':>5}  QUEUES (pending)")
    for sup in status["supervisors"]:
        queues = ", ".join(f"{q} ({info['size'] if info['size'] is not None else '?'})"
                           for q, info in sup["queues"].items())
        print(f"{sup['name']:<20} {sup['state']:<9} {sup['processes']:>5} {sup['busy']:>5}  {queues}")
        for b in sup["backoff"]:
            print(f"  ! slot {b['slot']} crash-looping: {b['failures']} failures, last {b['last_exit']}, "
                  f"next try in {b['restart_in']}s")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="horizonctl", description="Control a running horizond.")
    parser.add_argument("--socket", metavar="PATH", help="control socket (default: from the config)")
    parser.add_argument("--config", "-c", metavar="PATH", help="config file to read the socket path from")
    sub = parser.add_subparsers(dest="command", required=True)
    status = sub.add_parser("status", help="show state; exit 0 running, 1 paused, 2 not running")
    status.add_argument("--json", action="store_true")
    config = sub.add_parser("config", help="configuration")
    config_sub = config.add_subparsers(dest="action", required=True)
    config_sub.add_parser("show", help="print the running daemon's effective config as TOML")
    args = parser.parse_args(argv)
    path = find_socket(args)
    try:
        if args.command == "status":
            result = _result(request(path, "status"))
            if args.json:
                print(json.dumps(result, indent=2))
            else:
                print_status(result)
            return EXIT_PAUSED if result["state"] == "paused" else EXIT_RUNNING
        if args.command == "config":
            result = _result(request(path, "config"))
            sys.stdout.write(f"# effective config of the running daemon (from {result['source']})\n")
            sys.stdout.write(result["toml"])
            return 0
    except NotRunning as exc:
        print(f"horizonctl: {exc}", file=sys.stderr)
        if args.command == "status" and args.json:
            print(json.dumps({"state": "not running"}))
        return EXIT_NOT_RUNNING
    return 0


if __name__ == "__main__":
    sys.exit(main())
