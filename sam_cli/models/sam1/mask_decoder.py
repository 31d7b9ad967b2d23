"""Mask decoder: image embedding + prompt tokens → 4 low-res masks and their predicted IoU."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from .common import MLP, Embedding, LayerNorm2d, transposed_conv_matrix
from .factored import FactoredKeys, run_transformer
from .transformer import TwoWayTransformer


class MaskDecoder(nn.Module):
    #: Device types where the upscaling runs one prompt at a time (see _upscale_masks); the
    #: others upscale a whole batch at once (tests run both on the CPU).
    UPSCALE_ONE_BY_ONE_ON: tuple[str, ...] = ("cpu",)

    def __init__(
        self, *, transformer_dim: int = 256, transformer: TwoWayTransformer,
        num_multimask_outputs: int = 3, iou_head_depth: int = 3,
        iou_head_hidden_dim: int = 256,
    ) -> None:
        super().__init__()
        self.transformer = transformer
        self.num_mask_tokens = num_multimask_outputs + 1
        self.iou_token = Embedding(1, transformer_dim)
        self.mask_tokens = Embedding(self.num_mask_tokens, transformer_dim)
        self.output_upscaling = nn.Sequential(
            nn.ConvTranspose2d(transformer_dim, transformer_dim // 4, kernel_size=2, stride=2),
            LayerNorm2d(transformer_dim // 4),
            nn.GELU(),
            nn.ConvTranspose2d(transformer_dim // 4, transformer_dim // 8, kernel_size=2, stride=2),
            nn.GELU(),
        )
        self.output_hypernetworks_mlps = nn.ModuleList(
            MLP(transformer_dim, transformer_dim, transformer_dim // 8, 3)
            for _ in range(self.num_mask_tokens)
        )
        self.iou_prediction_head = MLP(
            transformer_dim, iou_head_hidden_dim, self.num_mask_tokens, iou_head_depth
        )

    def forward(
        self, image_embeddings: torch.Tensor, image_pe: torch.Tensor,
        sparse_prompt_embeddings: torch.Tensor, dense_prompt_embeddings: torch.Tensor,
        multimask_output: bool, grid_hw: tuple[int, int] | None = None,
        min_iou: float | None = None, cache: dict | None = None,
    ) -> tuple[torch.Tensor, ...]:
        """image_embeddings: 1×C×64×64 (one image, shared by every prompt, never copied per
        prompt) or B×C×64×64; sparse: B×T×C; dense: B×C×64×64 or 1×C×64×64.

        grid_hw = (gh, gw) upscales only the top-left gh×gw cells of the embedding grid, the
        part that is not padding; None upscales all. Each cell's 4×4 block of low-res pixels
        depends on that cell alone, so the blocks computed equal those of a full run.

        Returns masks B×M×4gh×4gw logits (256×256 for the whole grid) and iou B×M,
        M = 3 with multimask_output else 1. With min_iou, only the K prompts with a predicted
        IoU above it are upscaled (the IoU head runs before the upscaling), and the result is
        masks K×M×…, iou K×M and their prompt indices K (long).

        cache: the image's ImageFeatures.derived, where the transformer may keep what it shares
        between calls on the image (factored.run_transformer).
        """
        sl = slice(1, None) if multimask_output else slice(0, 1)
        return self.predict_masks(
            image_embeddings, image_pe, sparse_prompt_embeddings, dense_prompt_embeddings,
            sl, grid_hw, min_iou, cache,
        )

    def predict_masks(
        self, image_embeddings: torch.Tensor, image_pe: torch.Tensor,
        sparse: torch.Tensor, dense: torch.Tensor, outputs: slice = slice(None),
        grid_hw: tuple[int, int] | None = None, min_iou: float | None = None, cache: dict | None = None,
    ) -> tuple[torch.Tensor, ...]:
        """Masks and IoU of the mask tokens in `outputs` (all four by default); with min_iou,
        of the prompts that have a mask above it, and their indices (see forward).

        The transformer's image side and the upscaling run in their weights' dtype (bfloat16
        after Sam.set_precision); the prompt tokens, the heads, the returned logits and IoU
        are float32."""
        b = sparse.shape[0]
        dt = self.transformer.image_dtype
        out_tokens = torch.cat([self.iou_token.weight, self.mask_tokens.weight], dim=0)
        tokens = torch.cat([out_tokens.unsqueeze(0).expand(b, -1, -1), sparse], dim=1)
        # A dense embedding shared by all prompts (no mask prompt) keeps src at batch 1.
        if dense.shape[0] == 1 and image_embeddings.shape[0] == 1:
            src = image_embeddings + dense
        else:
            src = image_embeddings.expand(b, -1, -1, -1) + dense
        _, c, h, w = src.shape
        index = range(self.num_mask_tokens)[outputs]
        # only the IoU token and the wanted mask tokens leave the transformer: hs B×(1+M)×C
        hs, keys = run_transformer(
            self.transformer, src.to(dt), image_pe.to(dt), tokens.to(self.transformer.token_dtype),
            [0, *(1 + i for i in index)], cache,
        )  # keys: B×HW×C in dt, or FactoredKeys
        hs = hs.float()
        iou = self.iou_prediction_head(hs[:, 0, :])[:, outputs]
        mlps = list(self.output_hypernetworks_mlps)
        gh, gw = grid_hw if grid_hw is not None else (h, w)
        prompts: torch.Tensor | slice = slice(None)
        if min_iou is not None:
            # The upscaling is most of a prompt's cost: skip the prompts none of whose masks
            # the IoU filter would keep (the same `>` as the filter, so the kept masks are the
            # same).
            prompts = (iou > min_iou).any(dim=1).nonzero().squeeze(1)
            hs, iou = hs[prompts], iou[prompts]
        # one copy for the kept prompts and grid cells; none when all of both are kept
        if isinstance(keys, FactoredKeys):
            keys = keys.select(prompts).grid(h, w, gh, gw)
        else:
            keys = keys.view(b, h, w, c)[prompts, :gh, :gw].reshape(-1, gh * gw, c)
        hyper = torch.stack([mlps[i](hs[:, 1 + j, :]) for j, i in enumerate(index)], dim=1)  # K×M×C/8
        masks = self._upscale_masks(keys, hyper.to(dt), gh, gw).float()
        return (masks, iou) if min_iou is None else (masks, iou, prompts)

    def _upscale_masks(self, keys: torch.Tensor | FactoredKeys, hyper: torch.Tensor, h: int, w: int) -> torch.Tensor:
        """output_upscaling + hypernetwork product, computed channels-last.

        A 2×2 stride-2 transposed conv maps each input pixel to a 2×2 block independently, so it
        is one matmul per pixel (C_in → 2·2·C_out). Both stages run on B×HW×C tokens as they
        leave the transformer, with no transpose to B×C×H×W; pixels are put back in image order
        only for the M final masks. keys: B×HW×C, hyper: B×M×C/8 → B×M×4H×4W logits.
        On the CPU this runs one prompt at a time, so each prompt's activations (2 MB per
        stage) stay in cache (measured 1.2x faster than a batch of 8). FactoredKeys go into the
        first conv as their projection (FactoredKeys.project).
        """
        if isinstance(keys, FactoredKeys):
            if len(keys) == 0:
                return hyper.new_zeros(0, hyper.shape[1], 4 * h, 4 * w)
            w1, bias1 = transposed_conv_matrix(self.output_upscaling[0])
            return torch.cat([self._upscale_rest(x, hyper[i : i + 1], h, w)
                              for i, x in enumerate(keys.each_projection("sam1 upscaling", w1, bias1))])
        if keys.device.type in self.UPSCALE_ONE_BY_ONE_ON and keys.shape[0] > 1:
            return torch.cat([
                self._upscale_batch(keys[i : i + 1], hyper[i : i + 1], h, w)
                for i in range(keys.shape[0])
            ])
        return self._upscale_batch(keys, hyper, h, w)

    def _upscale_batch(self, keys: torch.Tensor, hyper: torch.Tensor, h: int, w: int) -> torch.Tensor:
        """_upscale_masks for one batch (Sam.compile_parts compiles this, not the loop)."""
        w1, bias1 = transposed_conv_matrix(self.output_upscaling[0])
        x = torch.addmm(bias1, keys.reshape(-1, keys.shape[-1]), w1)
        return self._upscale_rest(x.view(keys.shape[0], keys.shape[1], w1.shape[1]), hyper, h, w)

    def _upscale_rest(self, x: torch.Tensor, hyper: torch.Tensor, h: int, w: int) -> torch.Tensor:
        """_upscale_batch after the first conv's matmul: x B×HW×(2·2·C1)."""
        _, ln, act1, conv2, act2 = self.output_upscaling
        b = x.shape[0]
        c1, c2 = conv2.in_channels, conv2.out_channels
        x = F.layer_norm(x.view(-1, c1), (c1,), ln.weight, ln.bias, ln.eps)
        x = act1(x)  # (B·HW·4)×C1, pixel order (i, j, di1, dj1)
        w2 = conv2.weight.permute(0, 2, 3, 1).reshape(c1, 4 * c2)
        x = act2(torch.addmm(conv2.bias.repeat(4), x, w2))  # rows × (di2, dj2, C2)
        x = x.view(b, h * w * 16, c2)
        m = torch.bmm(x, hyper.transpose(1, 2))  # B×(i, j, di1, dj1, di2, dj2)×M
        m = m.view(b, h, w, 2, 2, 2, 2, hyper.shape[1]).permute(0, 7, 1, 3, 5, 2, 4, 6)
        return m.reshape(b, hyper.shape[1], 4 * h, 4 * w)
