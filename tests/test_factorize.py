"""Attribute factorization: class embeddings, residuals and their inverse, transfer."""

import pytest
import torch

from tagelib.factorize import (
    class_embeddings,
    compose,
    few_shot_embeddings,
    residuals,
    transfer,
    validate_layers,
)

L, D = 6, 4
S = [4, 0, 2]  # deliberately unsorted: the residual's layer axis follows this order


@pytest.fixture
def data():
    g = torch.Generator().manual_seed(0)
    w = torch.randn(10, L, D, generator=g)
    labels = torch.tensor([0, 2, 1, 2, 0, 0, 1, 2, 2, 1])
    return w, labels


def test_class_embeddings_match_loop_reference(data):
    w, labels = data
    ce = class_embeddings(w, labels)
    assert ce.shape == (3, L, D)
    for c in range(3):
        rows = [w[i] for i in range(len(labels)) if labels[i] == c]
        torch.testing.assert_close(ce[c], torch.stack(rows).mean(0))


def test_class_embeddings_num_classes_and_errors(data):
    w, labels = data
    with pytest.raises(ValueError, match=r"categories \[3\] have no samples"):
        class_embeddings(w, labels, num_classes=4)
    with pytest.raises(ValueError, match="num_classes"):
        class_embeddings(w, labels, num_classes=2)
    with pytest.raises(TypeError):
        class_embeddings(w, labels.float())


def test_few_shot_embeddings():
    shots = torch.arange(2 * 3 * L * D, dtype=torch.float32).reshape(2, 3, L, D)
    out = few_shot_embeddings(shots)
    assert out.shape == (2, L, D)
    torch.testing.assert_close(out[1], (shots[1, 0] + shots[1, 1] + shots[1, 2]) / 3)


def test_residuals_shape_and_values(data):
    w, labels = data
    ce = class_embeddings(w, labels)[labels]  # (B, L, D) per sample
    a = residuals(w, ce, S)
    assert a.shape == (10, len(S), D)
    torch.testing.assert_close(a[:, 0], w[:, 4] - ce[:, 4])
    torch.testing.assert_close(a[:, 1], w[:, 0] - ce[:, 0])
    # class embeddings average the residuals of a category to zero
    torch.testing.assert_close(a[labels == 1].mean(0), torch.zeros(len(S), D), atol=1e-6, rtol=0)


def test_compose_round_trip(data):
    w, labels = data
    ce = class_embeddings(w, labels)[labels]
    out = compose(ce, residuals(w, ce, S), S, base=w)
    torch.testing.assert_close(out, w)  # on S up to float rounding of (w - ce) + ce
    off = [l for l in range(L) if l not in S]
    assert torch.equal(out[:, off], w[:, off])  # off S: copied bit for bit
    # default base is the class embedding itself
    out2 = compose(ce, residuals(w, ce, S), S)
    assert torch.equal(out2[:, off], ce[:, off])
    torch.testing.assert_close(out2[:, S], w[:, S])


def test_compose_broadcasts_single_embedding_and_keeps_grad():
    ce = torch.randn(L, D)
    a = torch.randn(3, len(S), D, requires_grad=True)
    out = compose(ce, a, S)
    assert out.shape == (3, L, D)
    out.sum().backward()
    torch.testing.assert_close(a.grad, torch.ones_like(a))


def test_transfer(data):
    w, labels = data
    ce = class_embeddings(w, labels)
    src, tgt = ce[labels], ce[(labels + 1) % 3]
    torch.testing.assert_close(transfer(w, src, src, S), w)  # src == tgt: identity
    out = transfer(w, src, tgt, S)
    torch.testing.assert_close(out[:, S], tgt[:, S] + w[:, S] - src[:, S])
    off = [l for l in range(L) if l not in S]
    assert torch.equal(out[:, off], w[:, off])
    assert torch.equal(transfer(w, src, tgt, S, base=tgt)[:, off], tgt[:, off])


def test_layer_validation_messages(data):
    w, _ = data
    with pytest.raises(ValueError, match=r"valid indices are 0\.\.5"):
        residuals(w, w, [0, 6])
    with pytest.raises(ValueError, match="distinct"):
        validate_layers([1, 1], 6)
    with pytest.raises(ValueError, match="empty"):
        validate_layers([], 6)
    with pytest.raises(TypeError):
        validate_layers([0.5], 6)
    assert validate_layers((3, 0), 6) == [3, 0]
