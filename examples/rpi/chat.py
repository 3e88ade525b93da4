"""A chat on a Raspberry Pi with a small causal LM, streamed as it is generated.

    edgeformer build smollm2-135m --target rpi5 -o out/smol-rpi5    # on a laptop (~5 min)
    edgeformer bench out/smol-rpi5 --device ssh://pi@raspberrypi.local  # the C++ runner on the Pi
    scp -r out/smol-rpi5 pi@raspberrypi.local:
    python chat.py smol-rpi5                        # on the Pi; an empty line or Ctrl-D ends it

Each turn is one prompt through the model's chat template (no history kept: the cache holds
one exchange). Needs `pip install executorch==1.5.1` and edgeformer on the Pi.
"""

from __future__ import annotations

import argparse
import sys
import time

from edgeformer import load_artifact
from edgeformer.errors import UserError
from edgeformer.lm.generate import Sampling
from edgeformer.lm.session import LMSession, Stats


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("artifact", help="an edgeformer causal-LM artifact folder")
    p.add_argument("--max-new-tokens", type=int, default=200)
    p.add_argument("--temperature", type=float, default=0.0)
    p.add_argument("--threads", type=int, default=None)
    a = p.parse_args()
    try:
        session = LMSession(load_artifact(a.artifact), a.threads)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    while True:
        try:
            text = input("you> ").strip() if sys.stdin.isatty() else sys.stdin.readline().strip()
        except (EOFError, KeyboardInterrupt):
            break
        if not text:
            break
        stats = Stats()
        t0 = time.perf_counter()
        print("model> ", end="", flush=True)
        try:
            for piece in session.stream(text, a.max_new_tokens, Sampling(temperature=a.temperature), True, stats=stats,
                                        notice=lambda msg: print(f"\n(note: {msg})", file=sys.stderr)):
                print(piece, end="", flush=True)
        except KeyboardInterrupt:
            stats.stopped = "interrupted"
        seconds = time.perf_counter() - t0
        print(f"\n({stats.new_tokens} tokens, {stats.new_tokens / max(seconds, 1e-9):.1f} tok/s)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
