"""Property-based soundness of every bound method: random small networks of every supported op
(Linear, Conv, ConvTranspose, AvgPool, MaxPool, Scale, residual Sum, Select, Reshape, Concat,
ReLU, LeakyReLU, sigmoid, tanh, softplus, softmax) and random boxes; no sampled output (box
corners included) lies outside any bound, and alpha-CROWN is never looser than CROWN."""
import itertools

import numpy as np
from hypothesis import example, given, strategies as st

from verifier import bounds
from verifier.network import Network, Node
from verifier.network import ops as O

ACTS = ["relu", "leaky", "sigmoid", "tanh", "softplus"]


def _act(kind, rng):
    if kind == "relu":
        return O.Relu()
    if kind == "leaky":
        return O.LeakyRelu(float(rng.choice([0.01, 0.2, 1.0, 1.7])))
    return {"sigmoid": O.Sigmoid, "tanh": O.Tanh, "softplus": O.Softplus}[kind]()


class _Builder:
    def __init__(self, rng, shape):
        self.rng = rng
        self.nodes = []
        self.cur = "x"
        self.input_shape = self.shape = tuple(shape)

    def add(self, op, inputs=None, shape=None):
        name = f"n{len(self.nodes)}"
        self.nodes.append(Node(name, op, tuple(inputs or [self.cur]), tuple(shape)))
        self.cur, self.shape = name, tuple(shape)
        return name

    def w(self, *shape, fan_in=1):
        return self.rng.standard_normal(shape) * self.rng.uniform(0.5, 2.0) / np.sqrt(fan_in)

    def net(self):
        return Network("x", self.input_shape, self.nodes, self.cur)


def _image_block(b: _Builder, kind: str, act: str):
    rng = b.rng
    C, H, W = b.shape
    if kind == "conv":
        k = int(rng.integers(1, min(3, H, W) + 1))
        groups = C if (C > 1 and rng.random() < 0.3) else 1
        M = groups * int(rng.integers(1, 3))
        dil = 2 if (k == 2 and min(H, W) >= 3 and rng.random() < 0.3) else 1
        op = O.Conv(b.w(M, C // groups, k, k, fan_in=C * k * k), b.w(M),
                    stride=(1, 1 + int(rng.random() < 0.3)),
                    pads=tuple(int(p) for p in rng.integers(0, k, 4)) if k > 1 else (0, 0, 0, 0),
                    dilation=(dil, 1), groups=groups)
        b.add(op, shape=op.output_shape(b.shape))
    elif kind == "convT":
        k = int(rng.integers(1, 3))
        M = int(rng.integers(1, 3))
        op = O.ConvTranspose(b.w(C, M, k, k, fan_in=C * k * k), b.w(M),
                             stride=(1, 1 + int(rng.random() < 0.5)))
        b.add(op, shape=op.output_shape(b.shape))
    elif kind == "avgpool" and H > 1 and W > 1:
        op = O.AvgPool((2, 2), (1, 1), (int(rng.integers(0, 2)), 0, 0, int(rng.integers(0, 2))),
                       bool(rng.random() < 0.5))
        b.add(op, shape=op.output_shape(b.shape))
    elif kind == "maxpool" and H > 1 and W > 1:
        op = O.MaxPool((2, 2), (1 + int(rng.random() < 0.5), 1),
                       (0, int(rng.integers(0, 2)), 0, 0))
        b.add(op, shape=op.output_shape(b.shape))
    elif kind == "residual":
        x = b.cur
        op = O.Conv(b.w(C, C, 3, 3, fan_in=9 * C), b.w(C), pads=(1, 1, 1, 1)) if H > 2 and W > 2 \
            else O.Scale(b.w(*b.shape), b.w(*b.shape))
        y = b.add(op, shape=b.shape)
        y = b.add(_act(act, rng), shape=b.shape)
        wts = (float(rng.uniform(-1.5, 1.5)), float(rng.uniform(-1.5, 1.5)))
        b.add(O.Sum(wts), [x, y], b.shape)
    elif kind == "transpose":
        idx = np.arange(C * H * W).reshape(C, H, W).transpose(0, 2, 1)
        b.add(O.Select(idx), shape=idx.shape)
    elif kind == "pad":
        idx = np.pad(np.arange(C * H * W).reshape(C, H, W), ((0, 0), (1, 0), (0, 1)),
                     constant_values=-1)
        b.add(O.Select(idx, float(rng.uniform(-1, 1))), shape=idx.shape)
    elif kind == "concat":
        x = b.cur
        y = b.add(_act(act, rng), shape=b.shape)
        b.add(O.Concat(0), [x, y], (2 * C, H, W))
    elif kind == "linear_last":
        m = int(rng.integers(1, 4))
        b.add(O.Linear(b.w(m, W, fan_in=W), b.w(m)), shape=(C, H, m))
    elif kind == "scale":
        b.add(O.Scale(b.w(1, H, 1), b.w(C, 1, 1)), shape=b.shape)
    else:
        b.add(_act(act, rng), shape=b.shape)


def _dense_block(b: _Builder, kind: str, act: str):
    rng = b.rng
    n = b.shape[0]
    h = int(rng.integers(2, 9))
    x = b.cur
    if kind == "residual":
        b.add(O.Linear(b.w(n, n, fan_in=n), b.w(n)), shape=(n,))
        y = b.add(_act(act, rng), shape=(n,))
        b.add(O.Sum((1.0, float(rng.uniform(-1, 1)))), [x, y], (n,))
    elif kind == "concat":
        b.add(O.Linear(b.w(h, n, fan_in=n), b.w(h)), shape=(h,))
        y = b.add(_act(act, rng), shape=(h,))
        b.add(O.Concat(0), [x, y], (n + h,))
    else:
        b.add(O.Linear(b.w(h, n, fan_in=n), b.w(h)), shape=(h,))
        b.add(_act(act, rng), shape=(h,))


def build(seed, kind, blocks, acts, head_act, softmax) -> Network:
    """A random network: image blocks (then Flatten) or dense blocks, then
    Linear -> activation -> Linear (-> Softmax)."""
    rng = np.random.default_rng(seed)
    if kind == "image":
        b = _Builder(rng, (int(rng.integers(1, 3)), int(rng.integers(3, 6)),
                           int(rng.integers(3, 6))))
        for blk, act in zip(blocks, acts):
            _image_block(b, blk, act)
            if np.prod(b.shape) > 150:
                break
        n = int(np.prod(b.shape))
        b.add(O.Reshape((n,)), shape=(n,))
    else:
        b = _Builder(rng, (int(rng.integers(2, 7)),))
        for blk, act in zip(blocks, acts):
            _dense_block(b, blk, act)
    n = b.shape[0]
    h = int(rng.integers(2, 7))
    b.add(O.Linear(b.w(h, n, fan_in=n), b.w(h)), shape=(h,))
    b.add(_act(head_act, rng), shape=(h,))
    m = int(rng.integers(1, 4))
    b.add(O.Linear(b.w(m, h, fan_in=h), b.w(m)), shape=(m,))
    if softmax:
        b.add(O.Softmax(-1), shape=(m,))
    return b.net()


@st.composite
def networks(draw):
    seed = draw(st.integers(0, 2 ** 31 - 1))
    kind = draw(st.sampled_from(["image", "dense"]))
    pool = (["conv", "convT", "avgpool", "maxpool", "residual", "transpose", "pad", "concat",
             "linear_last", "scale", "act"] if kind == "image"
            else ["linear", "residual", "concat"])
    k = draw(st.integers(1, 4 if kind == "image" else 3))
    blocks = draw(st.lists(st.sampled_from(pool), min_size=k, max_size=k))
    acts = draw(st.lists(st.sampled_from(ACTS), min_size=k, max_size=k))
    head = draw(st.sampled_from(ACTS))
    softmax = draw(st.booleans()) if draw(st.integers(0, 5)) == 0 else False
    return seed, kind, tuple(blocks), tuple(acts), head, softmax


def _boxes(rng, n, B):
    centre = rng.standard_normal((B, n))
    radius = np.exp(rng.uniform(np.log(1e-3), np.log(1.0), (B, n)))
    radius[rng.random((B, n)) < 0.1] = 0.0
    return centre - radius, centre + radius


def _samples(rng, lo, hi, count=40):
    """Random points of the box, its centre, and corners (all of them when few)."""
    n = lo.shape[0]
    pts = [lo + rng.random((count, n)) * (hi - lo), (0.5 * (lo + hi))[None]]
    if n <= 8:
        corners = np.array(list(itertools.product([0, 1], repeat=n)), dtype=float)
    else:
        corners = (rng.random((64, n)) < 0.5).astype(float)
    pts.append(np.where(corners > 0, hi, lo))
    return np.clip(np.concatenate(pts), lo, hi)


@given(networks(), st.integers(0, 2 ** 31 - 1), st.integers(1, 2))
# regression: a Linear on the last axis of an image as the last layer (alpha-CROWN's forward
# pass reshaped its output to (B, K, m) instead of the flattened (B, K, C*H*m))
@example((4, "image", ("linear_last",), ("relu",), "relu", False), 0, 1)
def test_no_sampled_output_lies_outside_any_bound(spec, seed, B):
    net = build(*spec)
    rng = np.random.default_rng(seed)
    lo, hi = _boxes(rng, net.n_inputs, B)
    m = net.n_outputs
    C = rng.standard_normal((3, m))
    d = rng.standard_normal(3)
    results = {}
    for method in bounds.METHODS:
        results[method] = bounds.compute(net, lo, hi, C, d, method=method,
                                         intermediate=method == "crown")
        plain = bounds.compute(net, lo, hi, method=method)
        assert results[method].lower.shape == (B, 3) and plain.lower.shape == (B, m)
        for b in range(B):
            x = _samples(rng, lo[b], hi[b])
            y = net(x).reshape(len(x), -1)
            v = y @ C.T - d
            r = results[method]
            assert (v >= r.lower[b]).all() and (v <= r.upper[b]).all(), method
            assert (y >= plain.lower[b]).all() and (y <= plain.upper[b]).all(), method
    inter = results["crown"].intermediate
    for b in range(B):
        x = _samples(rng, lo[b], hi[b], 10)
        vals = net.forward_all(x.reshape((-1,) + net.input_shape))
        for name, bnd in inter.items():
            assert (vals[name] >= bnd.lower[b]).all() and (vals[name] <= bnd.upper[b]).all(), name
    a, c = results["alpha-crown"], results["crown"]
    assert (a.lower >= c.lower).all() and (a.upper <= c.upper).all()
