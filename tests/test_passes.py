"""How the export groups texts into forward passes (`emo.export.served.passes`): each text once, no pass over its
size, and the grouping of least cost, checked against every way of cutting the sorted texts."""

import itertools

import numpy as np
import pytest

from emo.export.served import passes


def cost(lengths, groups, pass_tokens):
    return sum(pass_tokens + len(group) * max(lengths[i] for i in group) for group in groups)


def least_cost(lengths, most, pass_tokens):
    """Every way of cutting the sorted lengths into runs of at most `most`: the cheapest one's cost."""
    ordered = sorted(lengths)
    best = float("inf")
    for cuts in itertools.product((False, True), repeat=len(ordered) - 1):
        bounds = [0, *[i + 1 for i, cut in enumerate(cuts) if cut], len(ordered)]
        runs = [ordered[a:b] for a, b in itertools.pairwise(bounds)]
        if all(len(run) <= most for run in runs):
            best = min(best, sum(pass_tokens + len(run) * run[-1] for run in runs))
    return best


@pytest.mark.parametrize("seed", range(30))
def test_texts_are_grouped_into_the_passes_that_cost_least(seed):
    random = np.random.default_rng(seed)
    lengths = random.integers(3, 70, size=int(random.integers(2, 10))).tolist()
    most, pass_tokens = int(random.integers(1, 10)), int(random.choice([0, 4, 16, 64]))
    groups = passes(lengths, most, pass_tokens)
    assert sorted(i for group in groups for i in group) == list(range(len(lengths)))  # each text once
    assert all(1 <= len(group) <= most for group in groups)
    assert cost(lengths, groups, pass_tokens) == least_cost(lengths, most, pass_tokens)


def test_texts_of_one_length_share_a_pass_and_very_different_ones_do_not():
    assert [len(group) for group in passes([12] * 40, most=64)] == [40]
    assert sorted(len(group) for group in passes([12] * 40, most=16)) == [8, 16, 16]
    groups = passes([100, 5, 6, 101, 5], most=64, pass_tokens=16)
    assert sorted(sorted(group.tolist()) for group in groups) == [[0, 3], [1, 2, 4]]
