"""Semantic search over a few lines of text with a MiniLM artifact, through the .pte only.

    edgeformer build minilm --target host -o out/minilm-host
    python examples/semantic_search.py out/minilm-host "a drink that kept me awake"
"""

import sys

import torch

from edgeformer import load_artifact
from edgeformer.predict import Predictor

DOCS = [
    "The espresso beans were fresh and strong.",
    "My dog refuses to eat these biscuits.",
    "The green tea tastes grassy and calm.",
    "Shipping was slow and the box arrived damaged.",
    "This granola is crunchy with lots of almonds.",
]


def main(artifact: str, query: str) -> None:
    predict = Predictor(load_artifact(artifact))
    if predict.task != "embedder":
        raise SystemExit(f"{artifact} is a {predict.task}; build an embedder (e.g. `edgeformer build minilm`)")
    docs = torch.tensor([predict(d)["embedding"] for d in DOCS])
    q = torch.tensor(predict(query)["embedding"])
    scores = docs @ q  # embeddings are L2-normalised: dot product = cosine similarity
    for i in scores.argsort(descending=True).tolist():
        print(f"{scores[i]:+.3f}  {DOCS[i]}")


if __name__ == "__main__":
    if len(sys.argv) != 3:
        raise SystemExit(__doc__)
    main(sys.argv[1], sys.argv[2])
