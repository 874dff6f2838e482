import pytest

from koda.analysis.similarity import levenshtein_similarity

A = "def f(x):\n    # add one\n    return x+1\n"
B = "def f(x):\n    return x + 1"


def test_views_ignore_what_they_should():
    assert levenshtein_similarity(A, A, "text") == 1.0
    assert levenshtein_similarity(A, B, "text") < 1.0
    assert levenshtein_similarity(A, B, "ast") == 1.0  # comments and spacing dropped
    assert levenshtein_similarity(A, B, "tokens") == 1.0


def test_value_is_normalised_edit_distance():
    # one substitution in the 12-character unparsed body: 1 - 1/len
    assert levenshtein_similarity("x = 1", "x = 2", "text") == pytest.approx(1 - 1 / 5)
    assert levenshtein_similarity("abc", "xyz", "text") == 0.0
    assert 0.0 < levenshtein_similarity(A, "def g(y): return y*2", "tokens") < 1.0


def test_unparsable_program_still_compares_and_bad_view_is_refused():
    assert 0.0 < levenshtein_similarity("def f(:", "def f():", "ast") < 1.0
    with pytest.raises(ValueError):
        levenshtein_similarity("a", "b", "bytes")
