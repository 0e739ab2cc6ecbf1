#!/usr/bin/env python3
"""Serve the lab's Proxmox (fakepve with castle's resize model and a Talos template) until stopped.

    pve_serve.py --host 127.0.0.2 --port 8006 --ca-out .lab/pve-ca.pem [--time-scale 0.05]
                 [--exit-on-stdin-eof]

Prints `pve lab listening on https://HOST:PORT` when ready. Login root@pam / secret.
"""

import argparse
import asyncio
import os
import signal
import sys
import threading

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from fakepve.certs import make_cert  # noqa: E402

from harness.pve import LabPve, add_talos_template  # noqa: E402


async def serve(args):
    os.makedirs(args.state_dir, exist_ok=True)
    certfile, keyfile, _ = make_cert(args.state_dir, name='pve', hosts=(args.host,))
    if args.ca_out:
        with open(certfile) as src, open(args.ca_out, 'w') as dst:
            dst.write(src.read())
    pve = LabPve(user='root@pam', password='secret', host=args.host, port=args.port)
    pve.time_scale = args.time_scale
    # PVE seconds each clone's copy takes (fakepve's are instant): `make crash` sets it.
    pve.slow_clones(float(os.environ.get('CASTLE_LAB_PVE_CLONE_SECS') or 0))
    add_talos_template(pve)
    await pve.start(certfile, keyfile)
    print('pve lab listening on %s' % pve.url, flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    if args.exit_on_stdin_eof:
        # The parent (castle-lab serve) holds our stdin open: when it dies, even by SIGKILL,
        # the pipe closes and we stop too, so no orphan keeps the port.
        def watch_stdin():
            while sys.stdin.buffer.read(4096):
                pass
            loop.call_soon_threadsafe(stop.set)
        threading.Thread(target=watch_stdin, name='stdin-eof', daemon=True).start()
    await stop.wait()
    await pve.stop()


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--host', default='127.0.0.2')
    parser.add_argument('--port', type=int, default=8006)
    parser.add_argument('--time-scale', type=float, default=0.05)
    parser.add_argument('--state-dir', default='.lab/pve')
    parser.add_argument('--ca-out')
    parser.add_argument('--exit-on-stdin-eof', action='store_true',
                        help='stop when stdin closes (the parent process is gone)')
    args = parser.parse_args()
    if not args.host.startswith('127.'):
        parser.error('the lab listens on loopback (127.0.0.0/8) only')
    asyncio.run(serve(args))


if __name__ == '__main__':
    main()
