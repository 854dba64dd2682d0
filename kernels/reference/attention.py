"""Attention with a bias table by matrix products, fancy indexing and an unbatched scatter-add."""
import numpy as np

__all__ = [
    "attention_fwd", "attention_bwd_value", "attention_bwd_logits",
    "attention_bwd_query", "attention_bwd_key", "attention_bwd_bias",
]


def _t(a):
    return np.swapaxes(a, -1, -2)


def attention_fwd(q, k, v, biases, bias_idxs, scale):
    logits = (_t(q) @ k) * q.dtype.type(scale) + biases[:, bias_idxs]
    exp = np.exp(logits - logits.max(axis=-1, keepdims=True))
    attn = exp / exp.sum(axis=-1, keepdims=True)
    return v @ _t(attn), attn


def attention_bwd_value(grad_out, attn):
    return grad_out @ attn


def attention_bwd_logits(grad_out, v, attn):
    grad_attn = _t(grad_out) @ v
    return attn * (grad_attn - (attn * grad_attn).sum(axis=-1, keepdims=True))


def attention_bwd_query(grad_logits, k, scale):
    return (k @ _t(grad_logits)) * k.dtype.type(scale)


def attention_bwd_key(grad_logits, q, scale):
    return (q @ grad_logits) * q.dtype.type(scale)


def attention_bwd_bias(grad_logits, bias_idxs, num_offsets):
    heads = grad_logits.shape[1]
    grad_biases = np.zeros((heads, num_offsets), grad_logits.dtype)
    np.add.at(grad_biases, (np.arange(heads)[:, None, None], bias_idxs[None]), grad_logits.sum(axis=0))
    return grad_biases
