import ast

import pytest

from koda.analysis.methods import lift_methods
from koda.analysis.report import verify_tree
from koda.errors import KodaError

SOLUTION = """
class Solution:
    def climb(self, n):
        if n <= 2:
            return n
        return self.climb(n - 1) + self.climb(n - 2)

    def sort(self, nums):
        if len(nums) <= 1:
            return nums
        mid = len(nums) // 2
        return self.merge(self.sort(nums[:mid]), self.sort(nums[mid:]))

    def merge(self, a, b):
        out = []
        i = j = 0
        while i < len(a) and j < len(b):
            if a[i] <= b[j]:
                out.append(a[i])
                i += 1
            else:
                out.append(b[j])
                j += 1
        return out + a[i:] + b[j:]

    @staticmethod
    def halve(n):
        return 0 if n < 1 else 1 + Solution.halve(n // 2)

    def cached(self, n):
        if n in self.memo:
            return self.memo[n]
        return self.cached(n - 1)
"""


def test_methods_using_self_only_for_calls_are_lifted():
    tree, names = lift_methods(ast.parse(SOLUTION))
    assert set(names.values()) == {"Solution.climb", "Solution.sort", "Solution.merge", "Solution.halve"}
    lifted = {f.name: f for f in tree.body if isinstance(f, ast.FunctionDef)}
    assert [a.arg for a in lifted["Solution__sort"].args.args] == ["nums"]
    assert "Solution__merge(Solution__sort(" in ast.unparse(lifted["Solution__sort"])


@pytest.mark.parametrize(
    ("name", "bound"),
    [("Solution.climb", "Θ(1.618^n)"), ("Solution.sort", "Θ(n log n)"), ("Solution.halve", "Θ(log n)")],
)
def test_methods_are_verified_like_functions(name, bound):
    r = verify_tree(ast.parse(SOLUTION), name, measure=False)
    assert r["function"] == name and r["bound_text"] == bound


def test_default_pick_and_stateful_method_refusal():
    assert verify_tree(ast.parse(SOLUTION), measure=False)["function"] == "Solution.climb"
    with pytest.raises(KodaError, match="uses self only to call"):
        verify_tree(ast.parse(SOLUTION), "Solution.cached", measure=False)
