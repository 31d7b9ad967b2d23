"""The two-way transformer for many prompts on one image, its image side kept factored.

In automatic mode (and for any batch of point or box prompts without a mask prompt) every
prompt starts from the same image tokens s (N×C, N = 4096). What a prompt changes in them
comes from the image → token attentions, whose output for image token i is a mix of the
prompt's T·H value rows: x = s + P·VO, P an N×TH softmax, VO a TH×C matrix (T ≈ 8 tokens,
H = 8 heads). Built as N×C tensors, each prompt costs six N×C×TH-sized matmuls plus passes of
LayerNorm, adds and softmax over 4 MB tensors: most of automatic mode's time on a CPU.

Here the image tokens are never built per prompt. After each LayerNorm they are written as

    keys_i = scale_i · shared_i + a_i · R + bias

shared_i a row of an N×C matrix computed once per image (SharedImage), scale_i a per-token
scalar (the LayerNorm's 1/σ), a_i the prompt's N×r mixing weights (its softmaxes) and R an r×C
matrix per prompt (its value rows, centred and scaled). A LayerNorm's mean is removed exactly
by centring the shared rows and R; its variance is the squared norm of that sum expanded,
‖scale·s‖² + 2·scale·a·(R s) + a·(R Rᵀ)·a, where R s goes through the heads' 16-wide value
projections against shared per-image products. Every projection of the keys a consumer needs
(the attention logits and values of the next layers, the upscaling's first conv) is the same
sum of a shared N×… product and a·(R W). Per prompt this is about 2.5x fewer multiply-adds than
the unfactored path (about 0.19 G against 0.47 G for SAM 2's eight tokens on 64×64 image
tokens), on N×r tensors (r = TH or 2TH + 1) in place of N×C ones; the decoder of automatic
mode takes a quarter less time (`scripts/cpu_profile.py --decoder`, benchmarks/cpu.md).

The algebra is exact: only the order of floating-point sums changes (outputs agree with the
unfactored TwoWayTransformer to float32 rounding, tests/test_factored_decoder.py). It applies
when the image tokens are shared (no mask prompt), on the CPU in float32, without autograd, to
the depth-2 transformer every SAM has; the decoders fall back to TwoWayTransformer otherwise.
"""

from __future__ import annotations

import torch

from .transformer import Attention, TwoWayTransformer


def _heads(x: torch.Tensor, h: int) -> torch.Tensor:
    """N×I → H×N×d (one contiguous copy): image rows a head's token weights mix."""
    return x.view(x.shape[0], h, -1).transpose(0, 1).contiguous()


def _heads_t(x: torch.Tensor, h: int) -> torch.Tensor:
    """N×I → H×d×N (one contiguous copy): image rows the tokens take dot products with."""
    return x.view(x.shape[0], h, -1).permute(1, 2, 0).contiguous()


# Per-prompt tensors over the image tokens are B×(H, T)×N: one row per (head, token), the N
# image tokens innermost, so the softmax over the T tokens runs vectorised along N.

def _per_head(q: torch.Tensor, shared_t: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
    """q B×T×H×d tokens · shared_t H×d×N image rows, head by head → B×(H, T)×N (added into
    out when given), written in place prompt by prompt (no layout copy)."""
    b, t, h, _ = q.shape
    qh = q.transpose(1, 2)  # B×H×T×d
    if out is None:
        res = q.new_empty(b, h, t, shared_t.shape[-1])
        for i in range(b):
            torch.bmm(qh[i], shared_t, out=res[i])
        return res.view(b, h * t, -1)
    res = out.view(b, h, t, -1)
    for i in range(b):
        res[i].baddbmm_(qh[i], shared_t)
    return out


def _mix_heads(p: torch.Tensor, shared: torch.Tensor, t: int) -> torch.Tensor:
    """p B×(H, T)×N weights · shared H×N×d rows, head by head → B×T×H×d."""
    b, _, n = p.shape
    h = shared.shape[0]
    ph = p.view(b, h, t, n)
    return torch.stack([torch.bmm(ph[i], shared) for i in range(b)]).transpose(1, 2)


def _token_rows(tokens: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
    """tokens B×T×H×d · rows B×R×I (I = H·d) per head → B×(H, T)×R."""
    b, t, h, d = tokens.shape
    return torch.einsum("bthe,brhe->bhtr", tokens, rows.view(b, rows.shape[1], h, d)).reshape(b, t * h, -1)


def _values(v: torch.Tensor, attn: Attention) -> torch.Tensor:
    """Token values B×T×H×d through out_proj, one C row per (head, token), the bias split over
    the heads (each image token's weights over the T tokens sum to 1 per head): B×HT×C."""
    c, h = attn.embedding_dim, attn.num_heads
    wo = attn.out_proj.weight.view(c, h, -1)
    vo = torch.einsum("bthe,che->bhtc", v, wo) + attn.out_proj.bias / h
    return vo.reshape(v.shape[0], -1, c)


def _value_dots(v: torch.Tensor, y: torch.Tensor, z: torch.Tensor, h: int) -> torch.Tensor:
    """Rows of _values(v) · image rows x_i, from y = x·Wout (H×d×N) and z = x·bias (N):
    B×HT×N."""
    return _per_head(v, y).add_(z / h)


def _quadratic(a: torch.Tensor, gram: torch.Tensor, k: int | None = None) -> torch.Tensor:
    """a B×R×N, gram B×R×R (symmetric) → aᵢ·gram·aᵢ for each of the N columns: B×N. With k,
    gram's lower-left block is folded into the upper-right one (x·G₁₁·x + 2·x·G₁₂·y + y·G₂₂·y
    for a = [x (k rows), y]): a quarter fewer multiply-adds."""
    if k is None:
        return torch.bmm(gram, a).mul_(a).sum(1)
    top = torch.cat([gram[:, :k, :k], 2 * gram[:, :k, k:]], 2)  # B×k×R
    out = torch.bmm(top, a).mul_(a[:, :k]).sum(1)
    return out.add_(torch.bmm(gram[:, k:, k:], a[:, k:]).mul_(a[:, k:]).sum(1))


def _rsqrt_var(sq: torch.Tensor, c: int, eps: float) -> torch.Tensor:
    return torch.rsqrt(sq.clamp_min(0) / c + eps)


def _softmax_tokens(logits: torch.Tensor, t: int, h: int) -> torch.Tensor:
    """B×(H, T)×N image → token logits → their softmax over the T tokens, same layout."""
    b, _, n = logits.shape
    return torch.softmax(logits.view(b, h, t, n), 2).view(b, h * t, n)


class SharedImage:
    """What every prompt's factored pass reads of one image: its tokens' shared products with
    the transformer's weights, computed once per image (about 20 N×C×128 matmuls) and kept
    with the image's features (ImageFeatures.derived)."""

    def __init__(self, tr: TwoWayTransformer, src: torch.Tensor, pe: torch.Tensor) -> None:
        l0, l1 = tr.layers
        fa = tr.final_attn_token_to_image
        a0t, a0i, a1t, a1i = (l0.cross_attn_token_to_image, l0.cross_attn_image_to_token,
                              l1.cross_attn_token_to_image, l1.cross_attn_image_to_token)
        h = a0i.num_heads
        s = src.flatten(2)[0].t().contiguous()  # N×C
        p = pe.flatten(2)[0].t().contiguous()
        self.n, self.c = s.shape
        sp = s + p
        # layer 0: the token → image keys and values, the image → token queries (all shared)
        self.k0 = a0t.k_proj(sp).view(self.n, h, -1).permute(1, 2, 0).contiguous()  # H×d×N
        self.v0 = _heads(a0t.v_proj(s), h)  # H×N×d
        self.q0 = _heads_t(a0i.q_proj(sp), h)
        # layer 0's norm4: centred rows, their squared norms, their dots with its value rows
        s_c = s - s.mean(1, keepdim=True)
        self.ss = (s_c * s_c).sum(1)
        self.y1, self.z1 = _heads_t(s_c @ a0i.out_proj.weight, h), s_c @ a0i.out_proj.bias
        # layer 1 reads keys1 = r1·(u + P1·W1) + β1, u = γ1 ⊙ s_c
        g1, b1 = l0.norm4.weight, l0.norm4.bias
        u = s_c * g1
        self.k1t = _heads_t(u @ a1t.k_proj.weight.t(), h)
        self.k1t_b = _heads_t((b1 + p) @ a1t.k_proj.weight.t(), h)
        self.v1t = _heads(u @ a1t.v_proj.weight.t(), h)
        self.v1t_b = a1t.v_proj(b1)  # I: each token's weights over the image sum to 1
        self.q1i = _heads_t(u @ a1i.q_proj.weight.t(), h)
        self.q1i_b = _heads_t(a1i.q_proj(b1 + p), h)
        # layer 1's norm4, of keys1 + P2·VO2 centred: r1·(u_c + P1·W1c) + β1c + P2·VO2c
        u_c = u - u.mean(1, keepdim=True)
        self.uu = (u_c * u_c).sum(1)
        y = u_c * g1  # W1 rows · u_c = VO1c rows · (γ1 ⊙ u_c)
        self.yb, self.zb, self.sy = _heads_t(y @ a0i.out_proj.weight, h), y @ a0i.out_proj.bias, y.sum(1)
        self.yc, self.zc = _heads_t(u_c @ a1i.out_proj.weight, h), u_c @ a1i.out_proj.bias
        self.ub = u_c @ b1
        # the final attention reads keys2 = r1·r2·w + r2·(a·Rg) + β2, w = γ2 ⊙ u_c
        g2, b2 = l1.norm4.weight, l1.norm4.bias
        self.w = u_c * g2
        self.kf = _heads_t(self.w @ fa.k_proj.weight.t(), h)
        self.kf_b = _heads_t((b2 + p) @ fa.k_proj.weight.t(), h)
        self.vf = _heads(self.w @ fa.v_proj.weight.t(), h)
        self.vf_b = fa.v_proj(b2)
        self.b2 = b2
        self._w_products: dict[str, torch.Tensor] = {}

    def w_product(self, name: str, weight: torch.Tensor) -> torch.Tensor:
        """w @ weight (N×O) for a consumer's weight (the upscaling's first conv), made once per
        name (a model's weights do not change while it decodes)."""
        got = self._w_products.get(name)
        if got is None:
            got = self._w_products[name] = self.w @ weight
        return got


class FactoredKeys:
    """The transformer's output image tokens for B prompts, B×N×C, as
    keys = r1r2 · shared.w + r2 · (aᵀ·rg) + β2 (see the module doc); `rows` (an index of the
    N tokens) keeps those tokens only."""

    def __init__(self, shared: SharedImage, r1r2: torch.Tensor, r2: torch.Tensor, a: torch.Tensor,
                 rg: torch.Tensor, rows: torch.Tensor | None = None) -> None:
        self.shared, self.r1r2, self.r2, self.a, self.rg, self.rows = shared, r1r2, r2, a, rg, rows

    def __len__(self) -> int:
        return self.a.shape[0]

    def select(self, idx) -> FactoredKeys:
        """These prompts (an index or slice of the B)."""
        return FactoredKeys(self.shared, self.r1r2[idx], self.r2[idx], self.a[idx], self.rg[idx], self.rows)

    def grid(self, h: int, w: int, gh: int, gw: int) -> FactoredKeys:
        """The tokens of the top-left gh×gw cells of the h×w grid."""
        if (gh, gw) == (h, w):
            return self
        rows = torch.arange(h * w, device=self.a.device).view(h, w)[:gh, :gw].reshape(-1)
        return FactoredKeys(self.shared, self.r1r2, self.r2, self.a, self.rg, rows)

    def project(self, name: str, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        """keys @ weight + bias (weight C×O, named for the shared product's cache): B×N×O,
        without building keys."""
        sw, a, r1r2, r2 = self.shared.w_product(name, weight), self.a, self.r1r2, self.r2
        if self.rows is not None:
            sw, a, r1r2, r2 = sw[self.rows], a[..., self.rows], r1r2[:, self.rows], r2[:, self.rows]
        out = torch.bmm(a.transpose(1, 2), self.rg @ weight).mul_(r2[..., None])  # B×N×O
        return out.addcmul_(r1r2[..., None], sw).add_(self.shared.b2 @ weight + bias)

    def each_projection(self, name: str, weight: torch.Tensor, bias: torch.Tensor):
        """project() one prompt at a time (1×N×O each), for consumers that run prompt by prompt
        on the CPU so that each prompt's activations stay in cache."""
        for i in range(len(self)):
            yield self.select(slice(i, i + 1)).project(name, weight, bias)

    def materialize(self) -> torch.Tensor:
        """keys itself, B×N×C (tests)."""
        c = self.shared.c
        eye = torch.eye(c, dtype=self.a.dtype, device=self.a.device)
        return self.project("identity", eye, eye.new_zeros(c))


def applies(tr: TwoWayTransformer) -> bool:
    """Whether tr's weights allow the factored pass: float32, SAM's depth-2 layout, and not
    compiled (a compiled transformer keeps its compiled path)."""
    from ..compiled import is_compiled

    return (tr.image_dtype == torch.float32 and tr.token_dtype == torch.float32
            and len(tr.layers) == 2 and tr.layers[0].skip_first_layer_pe and not tr.layers[1].skip_first_layer_pe
            and not is_compiled(tr))


def factorable(tr: TwoWayTransformer, src: torch.Tensor) -> bool:
    """Whether tr can run factored on src: applies(tr), and one image's tokens shared by every
    prompt, float32 on the CPU, no autograd or tracing."""
    return (src.shape[0] == 1 and src.device.type == "cpu" and src.dtype == torch.float32
            and not torch.is_grad_enabled() and not torch.jit.is_tracing() and applies(tr))


def shared_image(tr: TwoWayTransformer, src: torch.Tensor, pe: torch.Tensor, cache: dict | None) -> SharedImage:
    """The SharedImage of src for tr, from cache (an image's ImageFeatures.derived) when made
    before for this transformer."""
    got = cache.get(("factored", tr)) if cache is not None else None
    if got is None:
        got = SharedImage(tr, src, pe)
        if cache is not None:
            cache[("factored", tr)] = got
    return got


#: prompts in one decoder call from which an image's SharedImage is made (it costs about as
#: much as six prompts); once made, every later call on the image runs factored
MIN_BATCH = 8


def run_transformer(
    tr: TwoWayTransformer, src: torch.Tensor, pe: torch.Tensor, tokens: torch.Tensor,
    out_tokens: list[int] | None, cache: dict | None,
) -> tuple[torch.Tensor, torch.Tensor | FactoredKeys]:
    """tr(src, pe, tokens, out_tokens=…), factored where it applies (factorable, and a cache to
    keep the image's SharedImage in): queries and the image tokens, a tensor or FactoredKeys."""
    if cache is not None and factorable(tr, src) and (tokens.shape[0] >= MIN_BATCH or ("factored", tr) in cache):
        return factored_forward(tr, shared_image(tr, src, pe, cache), tokens, out_tokens)
    return tr(src, pe, tokens, out_tokens=out_tokens)


def factored_forward(
    tr: TwoWayTransformer, shared: SharedImage, tokens: torch.Tensor, out_tokens: list[int] | None = None,
) -> tuple[torch.Tensor, FactoredKeys]:
    """TwoWayTransformer.forward for B prompts on a shared image: tokens B×T×C → queries
    B×T'×C (T' = len(out_tokens), as forward) and the image tokens as FactoredKeys."""
    l0, l1 = tr.layers
    fa = tr.final_attn_token_to_image
    a0t, a0i, a1t, a1i = (l0.cross_attn_token_to_image, l0.cross_attn_image_to_token,
                          l1.cross_attn_token_to_image, l1.cross_attn_image_to_token)
    b, t, c = tokens.shape
    h, d = a0i.num_heads, a0i.head_dim
    scale = d**-0.5
    qpe = tokens

    # ---- layer 0 (no PE on its self-attention)
    queries = l0.norm1(l0.self_attn(tokens, tokens, tokens))
    q = a0t.q_proj(queries + qpe).view(b * t, h, d).transpose(0, 1)  # H×BT×d
    p = torch.softmax(torch.bmm(q, shared.k0) * scale, -1)
    out = torch.bmm(p, shared.v0).transpose(0, 1).reshape(b, t, -1)
    queries = l0.norm2(queries + a0t.out_proj(out))
    queries = l0.norm3(queries + l0.mlp(queries))
    k = a0i.k_proj(queries + qpe).view(b, t, h, d) * scale
    v1 = a0i.v_proj(queries).view(b, t, h, d)
    p1 = _softmax_tokens(_per_head(k, shared.q0), t, h)  # B×TH×N
    vo1 = _values(v1, a0i)  # B×TH×C
    vo1c = vo1 - vo1.mean(-1, keepdim=True)
    sq1 = _value_dots(v1, shared.y1, shared.z1, h).mul_(p1).sum(1).mul_(2).add_(shared.ss)
    sq1 += _quadratic(p1, vo1c @ vo1c.transpose(1, 2))
    r1 = _rsqrt_var(sq1, c, l0.norm4.eps)  # B×N
    w1 = vo1c * l0.norm4.weight  # keys1 = r1·(u + P1·W1) + β1

    # ---- layer 1: token → image
    q = queries + qpe
    queries = l1.norm1(queries + l1.self_attn(q, q, queries))
    q2 = a1t.q_proj(queries + qpe).view(b, t, h, d)
    zk = _token_rows(q2, w1 @ a1t.k_proj.weight.t())  # B×TH×TH
    logits = _per_head(q2, shared.k1t_b, torch.baddbmm(_per_head(q2, shared.k1t), zk, p1).mul_(r1[:, None]))
    pr = torch.softmax(logits.mul_(scale), -1).mul_(r1[:, None])  # B×TH×N: the weights times r1
    mixed = torch.bmm(pr, p1.transpose(1, 2))  # B×TH×TH: Σ_i p·r1·P1
    mv = (w1 @ a1t.v_proj.weight.t()).view(b, -1, h, d)  # B×TH×H×d
    out = _mix_heads(pr, shared.v1t, t) + torch.einsum("bhtr,brhe->bthe", mixed.view(b, h, t, -1), mv)
    queries = l1.norm2(queries + a1t.out_proj(out.reshape(b, t, -1) + shared.v1t_b))
    queries = l1.norm3(queries + l1.mlp(queries))

    # ---- layer 1: image → token, then its norm4 (keys2)
    k = a1i.k_proj(queries + qpe).view(b, t, h, d) * scale
    v2 = a1i.v_proj(queries).view(b, t, h, d)
    zq = _token_rows(k, w1 @ a1i.q_proj.weight.t())  # B×TH×TH
    logits = _per_head(k, shared.q1i_b, torch.baddbmm(_per_head(k, shared.q1i), zq, p1).mul_(r1[:, None]))
    p2 = _softmax_tokens(logits, t, h)
    vo2 = _values(v2, a1i)
    b1c = l0.norm4.bias - l0.norm4.bias.mean()
    rm = torch.cat([w1 - w1.mean(-1, keepdim=True), vo2 - vo2.mean(-1, keepdim=True),
                    b1c.expand(b, 1, c)], 1)  # B×R×C, R = 2TH + 1
    th, n = p1.shape[1], p1.shape[2]
    a = p1.new_empty(b, 2 * th + 1, n)  # B×R×N: r1·P1, P2, 1
    torch.mul(p1, r1[:, None], out=a[:, :th])
    a[:, th : 2 * th] = p2
    a[:, -1] = 1
    # a · (rm rows · u_c_i): W1 rows through VO1c · (γ1 ⊙ u_c), VO2 rows, β1
    m1 = vo1.mean(-1)  # B×TH
    dots1 = _value_dots(v1, shared.yb, shared.zb, h).sub_(m1[..., None] * shared.sy)
    lin = dots1.mul_(a[:, :th]).sum(1) + _value_dots(v2, shared.yc, shared.zc, h).mul_(p2).sum(1) + shared.ub
    sq2 = (r1 * r1 * shared.uu).add_(lin.mul_(r1), alpha=2).add_(_quadratic(a, rm @ rm.transpose(1, 2), th))
    r2 = _rsqrt_var(sq2, c, l1.norm4.eps)
    r1r2 = r1 * r2
    rg = rm * l1.norm4.weight  # keys2 = r1r2·w + r2·(a·Rg) + β2

    # ---- the final token → image attention, for out_tokens only
    qpe_all = queries + qpe
    if out_tokens is not None and out_tokens != list(range(t)):
        queries, qpe_all = queries[:, out_tokens], qpe_all[:, out_tokens]
    to = queries.shape[1]
    qf = fa.q_proj(qpe_all).view(b, to, h, d)
    zf = _token_rows(qf, rg @ fa.k_proj.weight.t())  # B×T'H×R
    logits = _per_head(qf, shared.kf).mul_(r1r2[:, None]).addcmul_(torch.bmm(zf, a), r2[:, None])
    logits = _per_head(qf, shared.kf_b, logits)
    p = torch.softmax(logits.mul_(scale), -1).mul_(r2[:, None])  # the weights times r2
    mixed = torch.bmm(p, a.transpose(1, 2))  # B×T'H×R
    mv = (rg @ fa.v_proj.weight.t()).view(b, -1, h, d)
    out = _mix_heads(p.mul_(r1[:, None]), shared.vf, to) + torch.einsum("bhtr,brhe->bthe", mixed.view(b, h, to, -1), mv)
    queries = tr.norm_final_attn(queries + fa.out_proj(out.reshape(b, to, -1) + shared.vf_b))
    return queries, FactoredKeys(shared, r1r2, r2, a, rg)


__all__ = ["MIN_BATCH", "FactoredKeys", "SharedImage", "applies", "factorable", "factored_forward", "run_transformer",
           "shared_image"]
