"""Budget-driven builds: the best artifact of a space of recipes that meets the target's budgets.

    >>> r = edgeformer.search.search(SearchSpec("out/minilm-foods", "host", data="fine-foods", out="out/foods-host"))
    >>> r.winner["describe"]
    'quant=int8 prune=0.25'

See run.py for the steps, space.py for the space, gate.py for the accuracy gate.
"""

from edgeformer.search.run import SearchResult, SearchSpec, search

__all__ = ["SearchResult", "SearchSpec", "search"]
