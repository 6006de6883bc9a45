"""`zsris-rt serve`: keep a pack loaded and answer over HTTP (the service: zsris_rt.service).

Exit status: 0 after SIGTERM or Ctrl-C once the requests in flight are answered; 2 on bad options
(binding beyond this machine without --token, an unloadable pack, a port in use).
"""

from __future__ import annotations

import argparse
import ipaddress
import logging
import signal
import socket
import threading

from ..errors import ZsrisError
from .exit_codes import run_command
from .options import add_proposer_mode, add_segmenter_options, load_segmenter

LOOPBACK = ("localhost",)
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="zsris-rt serve",
        description="Keep a pack loaded and answer over HTTP: /segment (image + expressions), "
                    "/scenes (encode once) and /scenes/ID/query (ask many times), /health, "
                    "/metrics (Prometheus), and a page at / to try it in a browser. See the "
                    "README's \"Robot loop\".",
        epilog="examples:\n"
               "  zsris-rt serve                                     (demo pack, 127.0.0.1:8321)\n"
               "  zsris-rt serve --pack engines/b32 --workers 2 --proposer-mode fast\n"
               "  zsris-rt serve --host 0.0.0.0 --token \"$(openssl rand -hex 16)\"\n\n"
               "Exit status: 0 after SIGTERM / Ctrl-C (requests in flight are answered "
               "first); 2 on bad options.",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pack", help="model pack (default: $ZSRIS_PACK, else the demo pack)")
    parser.add_argument("--host", default="127.0.0.1",
                        help="address to bind (default 127.0.0.1; any other needs --token)")
    parser.add_argument("--port", type=int, default=8321, help="port (default 8321; 0: any free "
                                                               "port, printed at start)")
    parser.add_argument("--token", help="require `Authorization: Bearer TOKEN` on every route "
                                        "but /health and the page")
    service = parser.add_argument_group("service limits")
    service.add_argument("--workers", type=int, default=1,
                         help="inference threads sharing the loaded sessions (default 1)")
    service.add_argument("--max-queue", type=int, default=8,
                         help="requests waiting for a worker; beyond, 503 (default 8)")
    service.add_argument("--max-scenes", type=int, default=32,
                         help="scenes kept for /scenes/ID/query, least recently used dropped "
                              "first (default 32)")
    service.add_argument("--max-scene-mb", type=int, default=2048,
                         help="memory all kept scenes may take, MiB (default 2048)")
    service.add_argument("--scene-ttl", type=float, default=600.0, metavar="SECONDS",
                         help="drop a scene not used for this long (default 600)")
    service.add_argument("--max-body-mb", type=float, default=32.0,
                         help="largest request body, MiB (default 32)")
    add_segmenter_options(parser)
    add_proposer_mode(parser)
    return parser


def is_loopback(host: str) -> bool:
    if host in LOOPBACK:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check(args: argparse.Namespace) -> None:
    if not is_loopback(args.host) and not args.token:
        raise ZsrisError(f"binding {args.host} exposes the service beyond this machine: give "
                         "--token TOKEN (clients send `Authorization: Bearer TOKEN`)")
    if args.token is not None and len(args.token) < 8:
        raise ZsrisError("--token must be at least 8 characters")
    for name in ("workers", "max_scenes", "max_scene_mb"):
        if getattr(args, name) < 1:
            raise ZsrisError(f"--{name.replace('_', '-')} must be at least 1")
    if args.max_queue < 0 or args.scene_ttl <= 0 or args.max_body_mb <= 0:
        raise ZsrisError("--max-queue must be ≥ 0, --scene-ttl and --max-body-mb > 0")
    if not 0 <= args.port <= 65535:
        raise ZsrisError(f"--port {args.port} is not a port")


def serve(args: argparse.Namespace) -> int:
    try:
        import uvicorn
    except ImportError:
        raise ZsrisError("the service needs its extra: pip install 'zsris-rt[serve]'") from None

    from ..service.app import create_app
    from ..service.core import ServiceConfig, ServiceCore

    check(args)
    family = socket.AF_INET6 if ":" in args.host else socket.AF_INET
    # IPPROTO_TCP, not 0: asyncio sets TCP_NODELAY only on sockets that say they are TCP; without
    # it, a kept-alive connection waits 40 ms (delayed ACK) for each response's body
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((args.host, args.port))
        sock.listen(2048)  # before the line that says so: connections wait until uvicorn runs
    except OSError as exc:
        sock.close()
        raise ZsrisError(f"cannot listen on {args.host}:{args.port}: {exc.strerror}") from None
    segmenter = load_segmenter(args)
    core = ServiceCore(segmenter, ServiceConfig(
        workers=args.workers, max_queue=args.max_queue, max_scenes=args.max_scenes,
        max_scene_mb=args.max_scene_mb, scene_ttl_s=args.scene_ttl))
    app = create_app(core, args.token, int(args.max_body_mb * (1 << 20)))
    host, port = sock.getsockname()[:2]
    where = f"[{host}]" if family == socket.AF_INET6 else host
    print(f"zsris-rt serve: {segmenter.pack.root} on {segmenter.backend.name}, "
          f"{args.workers} worker(s), listening on http://{where}:{port}", flush=True)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    config = uvicorn.Config(app, log_level="warning", access_log=False,
                            timeout_graceful_shutdown=60, lifespan="off")
    # uvicorn stops gracefully on SIGTERM / SIGINT, then raises the signal again to the handlers
    # it found: these take it, so that the workers are closed and the exit status is 0.
    quiet = threading.current_thread() is threading.main_thread()
    previous = {sig: signal.signal(sig, lambda *_: None) for sig in STOP_SIGNALS} if quiet else {}
    try:
        uvicorn.Server(config).run(sockets=[sock])
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        core.close()
        sock.close()
    print("zsris-rt serve: stopped", flush=True)
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return run_command("zsris-rt serve", lambda: serve(args))
