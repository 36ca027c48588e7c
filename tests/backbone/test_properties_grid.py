"""Property tests: tokens_to_grid is a lossless round trip for any batch of grid shapes."""

from __future__ import annotations

import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import siglip2_dense as sd

grid_shapes = st.lists(st.tuples(st.integers(1, 7), st.integers(1, 7)), min_size=1, max_size=4)


@settings(max_examples=60, deadline=None)
@given(shapes=grid_shapes, extra=st.integers(0, 5), channels=st.integers(1, 4))
def test_round_trip_for_any_shapes(shapes, extra, channels):
    spatial = torch.tensor(shapes)
    num_tokens = int(spatial.prod(-1).max()) + extra
    tokens = torch.randn(len(shapes), num_tokens, channels)
    grid, mask = sd.tokens_to_grid(tokens, spatial)
    assert grid.shape == (len(shapes), channels, int(spatial[:, 0].max()), int(spatial[:, 1].max()))
    for b, (h, w) in enumerate(shapes):
        assert int(mask[b].sum()) == h * w
        # reading the real cells back row-major gives the first h*w tokens, untouched
        back = grid[b, :, :h, :w].permute(1, 2, 0).reshape(h * w, channels)
        assert torch.equal(back, tokens[b, : h * w])
        assert torch.count_nonzero(grid[b][:, ~mask[b]]) == 0


@settings(max_examples=30, deadline=None)
@given(shapes=grid_shapes)
def test_gradient_reaches_exactly_the_valid_tokens(shapes):
    spatial = torch.tensor(shapes)
    tokens = torch.randn(len(shapes), int(spatial.prod(-1).max()) + 2, 3, requires_grad=True)
    grid, _ = sd.tokens_to_grid(tokens, spatial)
    grid.sum().backward()
    for b, (h, w) in enumerate(shapes):
        assert torch.equal(tokens.grad[b, : h * w], torch.ones(h * w, 3))
        assert torch.count_nonzero(tokens.grad[b, h * w :]) == 0
