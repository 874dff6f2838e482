"""Textbook recursive functions as source text, shared by the analysis tests."""

MERGE_SORT = '''
def merge_sort(xs):
    if len(xs) <= 1:
        return xs
    mid = len(xs) // 2
    left = merge_sort(xs[:mid])
    right = merge_sort(xs[mid:])
    out = []
    i = j = 0
    while i < len(left) and j < len(right):
        if left[i] <= right[j]:
            out.append(left[i])
            i += 1
        else:
            out.append(right[j])
            j += 1
    return out + left[i:] + right[j:]
'''

BINARY_SEARCH = '''
def binary_search(xs, target, lo, hi):
    if lo > hi:
        return -1
    mid = (lo + hi) // 2
    if xs[mid] == target:
        return mid
    if xs[mid] < target:
        return binary_search(xs, target, mid + 1, hi)
    return binary_search(xs, target, lo, mid - 1)
'''

FAST_POWER = '''
def power(x, n):
    if n == 0:
        return 1
    half = power(x, n // 2)
    if n % 2 == 0:
        return half * half
    return half * half * x
'''

FAST_POWER_ODD_STEP = '''
def power(x, n):
    if n == 0:
        return 1
    if n % 2 == 1:
        return x * power(x, n - 1)
    return power(x * x, n // 2)
'''

KARATSUBA = '''
def karatsuba(a, b):
    n = len(a)
    if n == 1:
        return [a[0] * b[0]]
    m = n // 2
    a0, a1 = a[:m], a[m:]
    b0, b1 = b[:m], b[m:]
    z0 = karatsuba(a0, b0)
    z2 = karatsuba(a1, b1)
    z1 = karatsuba([x + y for x, y in zip(a0, a1)], [x + y for x, y in zip(b0, b1)])
    out = [0] * (2 * n - 1)
    for i in range(len(z0)):
        out[i] += z0[i]
        out[i + m] -= z0[i]
    for i in range(len(z2)):
        out[i + 2 * m] += z2[i]
        out[i + m] -= z2[i]
    for i in range(len(z1)):
        out[i + m] += z1[i]
    return out
'''

STRASSEN = '''
def add(X, Y):
    return [[a + b for a, b in zip(r, s)] for r, s in zip(X, Y)]

def sub(X, Y):
    return [[a - b for a, b in zip(r, s)] for r, s in zip(X, Y)]

def strassen(A, B):
    n = len(A)
    if n == 1:
        return [[A[0][0] * B[0][0]]]
    m = n // 2
    A11 = [row[:m] for row in A[:m]]
    A12 = [row[m:] for row in A[:m]]
    A21 = [row[:m] for row in A[m:]]
    A22 = [row[m:] for row in A[m:]]
    B11 = [row[:m] for row in B[:m]]
    B12 = [row[m:] for row in B[:m]]
    B21 = [row[:m] for row in B[m:]]
    B22 = [row[m:] for row in B[m:]]
    M1 = strassen(add(A11, A22), add(B11, B22))
    M2 = strassen(add(A21, A22), B11)
    M3 = strassen(A11, sub(B12, B22))
    M4 = strassen(A22, sub(B21, B11))
    M5 = strassen(add(A11, A12), B22)
    M6 = strassen(sub(A21, A11), add(B11, B12))
    M7 = strassen(sub(A12, A22), add(B21, B22))
    C11 = add(sub(add(M1, M4), M5), M7)
    C12 = add(M3, M5)
    C21 = add(M2, M4)
    C22 = add(sub(add(M1, M3), M2), M6)
    top = [r1 + r2 for r1, r2 in zip(C11, C12)]
    bottom = [r1 + r2 for r1, r2 in zip(C21, C22)]
    return top + bottom
'''

THIRDS = '''
def thirds(xs):
    n = len(xs)
    if n <= 2:
        return 0
    k = n // 3
    t = 0
    for x in xs:
        t += x
    return thirds(xs[:k]) + thirds(xs[k:]) + t
'''

QUADRATIC_COMBINE = '''
def pairs(n):
    if n <= 1:
        return 1
    s = 0
    for i in range(n):
        for j in range(n):
            s += i ^ j
    return pairs(n // 2) + pairs(n // 2) + s
'''

FOUR_HALVES = '''
def four(n):
    if n <= 1:
        return 1
    s = sum(range(n))
    return four(n // 2) + four(n // 2) + four(n // 2) + four(n // 2) + s
'''

FIB = '''
def fib(n):
    if n < 2:
        return n
    return fib(n - 1) + fib(n - 2)
'''

HANOI = '''
def hanoi(n, src, dst, via, moves):
    if n == 0:
        return
    hanoi(n - 1, src, via, dst, moves)
    moves.append((src, dst))
    hanoi(n - 1, via, dst, src, moves)
'''

LINEAR = '''
def count_down(n):
    if n <= 0:
        return 0
    return 1 + count_down(n - 1)
'''

LIST_SUM = '''
def total(xs):
    if not xs:
        return 0
    return xs[0] + total(xs[1:])
'''

# ---- cases the extractor must refuse ----------------------------------------------------

QUICKSORT = '''
def quicksort(xs):
    if len(xs) <= 1:
        return xs
    p = xs[0]
    return quicksort([x for x in xs[1:] if x < p]) + [p] + quicksort([x for x in xs[1:] if x >= p])
'''

MEMO_FIB = '''
from functools import lru_cache

@lru_cache(maxsize=None)
def fib(n):
    if n < 2:
        return n
    return fib(n - 1) + fib(n - 2)
'''

UNKNOWN_CALL = '''
def walk(n):
    if n <= 1:
        return 1
    mystery(n)
    return walk(n // 2)
'''

GCD = '''
def gcd(a, b):
    if b == 0:
        return a
    return gcd(b, a % b)
'''

MIXED = '''
def mixed(n):
    if n <= 1:
        return 1
    return mixed(n - 1) + mixed(n // 2)
'''

NOT_RECURSIVE = '''
def square(n):
    return sum(i for i in range(n) for j in range(n))
'''

LOOP_RECURSION = '''
def perms(xs):
    if len(xs) <= 1:
        return [xs]
    out = []
    for i in range(len(xs)):
        for p in perms(xs[:i] + xs[i + 1:]):
            out.append([xs[i]] + p)
    return out
'''

# ---- shapes generated code often takes ---------------------------------------------------

NESTED_MERGE = '''
def msort(arr):
    def merge(a, b):
        out = []
        i = j = 0
        while i < len(a) and j < len(b):
            if a[i] < b[j]:
                out.append(a[i])
                i += 1
            else:
                out.append(b[j])
                j += 1
        out.extend(a[i:])
        out.extend(b[j:])
        return out
    if len(arr) <= 1:
        return arr
    mid = len(arr) // 2
    return merge(msort(arr[:mid]), msort(arr[mid:]))
'''

IN_PLACE_MERGE = '''
def merge_sort(arr):
    if len(arr) > 1:
        mid = len(arr) // 2
        L = arr[:mid]
        R = arr[mid:]
        merge_sort(L)
        merge_sort(R)
        i = j = k = 0
        while i < len(L) and j < len(R):
            if L[i] < R[j]:
                arr[k] = L[i]
                i += 1
            else:
                arr[k] = R[j]
                j += 1
            k += 1
        while i < len(L):
            arr[k] = L[i]
            i += 1
            k += 1
        while j < len(R):
            arr[k] = R[j]
            j += 1
            k += 1
    return arr
'''

DEFAULT_BOUNDS_SEARCH = '''
def search(arr, x, low=0, high=None):
    if high is None:
        high = len(arr) - 1
    if high >= low:
        mid = (high + low) // 2
        if arr[mid] == x:
            return mid
        elif arr[mid] > x:
            return search(arr, x, low, mid - 1)
        else:
            return search(arr, x, mid + 1, high)
    else:
        return -1
'''

TO_BINARY = '''
def to_binary(n):
    if n == 0:
        return ""
    return to_binary(n // 2) + str(n % 2)
'''
