"""Attention kernels against straightforward references: band masks, torch.topk, full attention."""

import math

import pytest
import torch

from edgeformer.models.attention_kernels import NEG, Attention


def reference(attn: Attention, x, mask, window=None, global_tokens=0, k=None):
    """Full n×n attention with an explicit band mask and exact top-k (torch.topk)."""
    b, s, _ = x.shape
    h, d = attn.num_heads, attn.head_dim
    q, key, v = (t.reshape(b, s, h, d).transpose(1, 2) for t in attn.qkv(x).split(h * d, -1))
    scores = (q @ key.transpose(-1, -2)).masked_fill(mask[:, None, None, :] == 0, NEG)
    if window:
        i, j = torch.arange(s)[:, None], torch.arange(s)[None, :]
        allowed = ((i - j).abs() <= window // 2) | (i < global_tokens) | (j < global_tokens)
        scores = scores.masked_fill(~allowed, -math.inf)
    if k:
        kth = scores.topk(k, dim=-1).values[..., -1:]
        scores = scores.masked_fill(scores < kth, -math.inf)
    out = scores.softmax(-1) @ v
    return attn.out(out.transpose(1, 2).reshape(b, s, h * d))


def inputs(s, seed=0, pad=3):
    torch.manual_seed(seed)
    attn = Attention(16, 2, 8).eval()
    x = torch.randn(2, s, 16)
    mask = torch.ones(2, s, dtype=torch.long)
    mask[1, s - pad:] = 0  # the second sequence is padded
    return attn, x, mask, ((1 - mask.float()) * NEG).reshape(2, 1, 1, s)


def assert_valid_rows_close(y, ref, mask, atol=1e-5):
    """Padded query rows are never read (keys are masked, pooling skips them): compare the rest."""
    valid = mask.bool()
    torch.testing.assert_close(y[valid], ref[valid], atol=atol, rtol=0)


@pytest.mark.parametrize("s,window,g", [
    (16, 4, 0),   # blocks of window // 2 = 2 queries; 16 is a multiple
    (10, 6, 0),   # not a multiple of the block (3): the last block is padded
    (13, 5, 1),   # an odd window (2 each side), one global token ([CLS])
    (19, 4, 2),
    (7, 2, 0),
    (12, 8, 0),   # up to 3 blocks long: the n×n scores under a band mask computed in the graph
    (14, 10, 1),
])
def test_window_equals_full_attention_with_the_band_mask(s, window, g):
    attn, x, mask, mask_add = inputs(s)
    attn.set_window(window, g)
    with torch.no_grad():
        ref = reference(attn, x, mask, window, g)
        assert_valid_rows_close(attn(x, mask_add), ref, mask)
        for i in range(2):  # batch 1, as every export runs (its own score paths)
            assert_valid_rows_close(attn(x[i : i + 1], mask_add[i : i + 1]), ref[i : i + 1], mask[i : i + 1])


@pytest.mark.parametrize("s", [1, 7, 16])
def test_full_attention_at_batch_one_equals_the_reference(s):
    attn, x, mask, mask_add = inputs(s, pad=min(3, s - 1))
    with torch.no_grad():
        ref = reference(attn, x, mask)
        for i in range(2):
            assert_valid_rows_close(attn(x[i : i + 1], mask_add[i : i + 1]), ref[i : i + 1], mask[i : i + 1])


@pytest.mark.parametrize("s", [8, 11])
def test_window_covering_the_sequence_equals_full_attention(s):
    """A window of w sees w // 2 tokens each side, so 2(s - 1) covers every key from every query."""
    attn, x, mask, mask_add = inputs(s)
    with torch.no_grad():
        full = attn(x, mask_add)
        attn.set_window(2 * (s - 1))
        assert_valid_rows_close(attn(x, mask_add), full, mask)
        attn.set_window(None)
        torch.testing.assert_close(attn(x, mask_add), full)


def test_top_k_equal_to_the_sequence_is_full_attention():
    attn, x, mask, mask_add = inputs(9, pad=0)
    with torch.no_grad():
        full = attn(x, mask_add)
        attn.top_k = 9
        torch.testing.assert_close(attn(x, mask_add), full, atol=1e-6, rtol=0)


@pytest.mark.parametrize("s,k,window,g", [(9, 4, None, 0), (12, 1, None, 0), (13, 3, 5, 1), (20, 5, 6, 0)])
def test_top_k_keeps_exactly_the_k_best_keys(s, k, window, g):
    attn, x, mask, mask_add = inputs(s, seed=3)
    if window:
        attn.set_window(window, g)
    attn.top_k = k
    with torch.no_grad():
        y = attn(x, mask_add)
        assert_valid_rows_close(y, reference(attn, x, mask, window, g, k), mask)
        attn.top_k = None
        assert (y - attn(x, mask_add)).abs().max() > 1e-3  # it does change the output


def test_window_work_grows_linearly():
    """The windowed kernel's scores are [.., 3r] wide (r = window // 2), whatever the length."""
    attn = Attention(16, 2, 8).eval()
    attn.set_window(8)
    seen = []
    orig = torch.Tensor.softmax

    def spy(t, *a, **kw):
        seen.append(t.numel())
        return orig(t, *a, **kw)

    torch.Tensor.softmax = spy
    try:
        with torch.no_grad():
            for s in (64, 256):
                attn(torch.randn(1, s, 16), torch.zeros(1, 1, 1, s))
    finally:
        torch.Tensor.softmax = orig
    assert seen == [2 * 64 * 12, 2 * 256 * 12]  # heads × n × 3r: 4x the length, 4x the scores
