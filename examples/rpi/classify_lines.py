"""Real-time classification of lines typed or piped in, on a Raspberry Pi (or anywhere).

    edgeformer build minilm --target rpi5 --prune auto --data fine-foods -o out/foods-rpi5   # on a laptop
    scp -r out/foods-rpi5 pi@raspberrypi.local:                                             # to the Pi
    python classify_lines.py foods-rpi5            # on the Pi: type a line, get its label
    journalctl -f | python classify_lines.py foods-rpi5 --json    # or classify a stream

Each line is classified as it arrives; the time printed is the model's alone (tokenize
excluded), measured on the device. Needs `pip install executorch==1.5.1` and edgeformer.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

from edgeformer import load_artifact
from edgeformer.errors import UserError
from edgeformer.predict import Predictor


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("artifact", help="an edgeformer classifier (or embedder) artifact folder")
    p.add_argument("--threads", type=int, default=None, help="CPU threads (default: the artifact's, 4 for rpi5)")
    p.add_argument("--json", action="store_true", help="one JSON object per line instead of text")
    a = p.parse_args()
    try:
        pred = Predictor(load_artifact(a.artifact), a.threads)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if sys.stdin.isatty():
        print(f"{pred.task} ready; type a line (Ctrl-D to stop)", file=sys.stderr)
    times = []
    try:
        for line in sys.stdin:
            text = line.strip()
            if not text:
                continue
            t0 = time.perf_counter()
            r = pred(text)
            ms = (time.perf_counter() - t0) * 1e3
            times.append(ms)
            if a.json:
                print(json.dumps(dict(r, ms=round(ms, 2))), flush=True)
            elif pred.task == "classifier":
                print(f"{r['label']}\t{r['score']:.3f}\t{ms:.1f} ms\t{text}", flush=True)
            else:
                print(f"[{', '.join(f'{x:+.3f}' for x in r['embedding'][:4])}, …]\t{ms:.1f} ms\t{text}", flush=True)
    except KeyboardInterrupt:
        pass
    if times:
        times.sort()
        print(f"{len(times)} lines, median {times[len(times) // 2]:.1f} ms", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
