"""SIA's model-side pieces, pure torch/transformers (usable without Lightning).

* :func:`depth_upscale` - LLaMA-Pro-style block expansion (Wu et al., ACL 2024, arXiv 2401.02415):
  after every ``insert_every`` decoder layers a copy of the last layer of the group is inserted;
  with ``zero_init`` its output projections (attention ``o_proj``/``c_proj`` and MLP
  ``down_proj``/``c_proj``) are zeroed, so the new residual block adds nothing and the model's
  function is unchanged at insertion. SIA's "Depth Up-Scaling" (named after SOLAR, Kim et al.
  arXiv 2312.15166) trains mainly the new layers (:func:`freeze_for_injection`).
* :func:`build_word_tokenizer` - an offline word-level tokenizer (``tokenizers``) in a
  :class:`~transformers.PreTrainedTokenizerFast`.
* :func:`collate_lm` / :func:`collate_sft` - batches with loss on all tokens / on answer tokens.
* :func:`embedding_pgd` - the embedding-space attack (Schwinn et al. 2024, "Soft Prompt Threats";
  used for training as continuous adversarial training by Xhonneux et al. 2024): PGD on the prompt
  token embeddings that maximises the loss of the safe response, through the shared attack core.
* :func:`suffix_search` - a discrete adversarial suffix by best-of-K random search.
* :func:`greedy_generate` - greedy decoding from (possibly perturbed) prompt embeddings.
* :func:`shard_causal_lm` / :func:`gathered_parameters` / :func:`embedding_std` - FSDP2
  (``torch.distributed.fsdp.fully_shard``) sharding of an HF causal LM and the two things SIA needs
  on top of it: a full copy of the weights for data-dependent local work (generation, evaluation
  attacks) and the embedding scale from a sharded table.
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from robust_lightning._validation import check_int_at_least
from robust_lightning.attacks.core import attack_mode, pgd
from robust_lightning.datamodules.text import build_word_tokenizer as _word_tokenizer

__all__ = [
    "SPECIAL_TOKENS",
    "build_causal_lm",
    "build_word_tokenizer",
    "collate_lm",
    "collate_sft",
    "decoder_layers",
    "depth_upscale",
    "embedding_noise",
    "embedding_pgd",
    "embedding_std",
    "freeze_for_injection",
    "gathered_parameters",
    "greedy_generate",
    "is_sharded",
    "response_loss",
    "shard_causal_lm",
    "suffix_search",
]

SPECIAL_TOKENS = {"pad_token": "[PAD]", "unk_token": "[UNK]", "bos_token": "[BOS]", "eos_token": "[EOS]"}
IGNORE_INDEX = -100
# Output projections per architecture family: zeroing them makes a residual block an identity.
_OUTPUT_PROJECTIONS = (("self_attn", "o_proj"), ("mlp", "down_proj"), ("attn", "c_proj"), ("mlp", "c_proj"))


def build_word_tokenizer(texts: Sequence[str]) -> Any:
    """A case-preserving word-level tokenizer with causal-LM special tokens (BOS/EOS/PAD/UNK)."""
    return _word_tokenizer(texts, lowercase=False, special_tokens=SPECIAL_TOKENS, encoder_template=False)


def build_causal_lm(config: Mapping[str, Any], tokenizer: Any) -> nn.Module:
    """A randomly initialised HF causal LM from a config dict with ``model_type`` (no download)."""
    from transformers import AutoConfig, AutoModelForCausalLM

    if not isinstance(config, Mapping) or "model_type" not in config:
        raise ValueError(f"model_config must be a dict with a 'model_type' key, got {config!r}")
    kwargs = dict(config)
    model_type = kwargs.pop("model_type")
    kwargs.setdefault("vocab_size", len(tokenizer))
    for name in ("pad_token_id", "bos_token_id", "eos_token_id"):
        kwargs.setdefault(name, getattr(tokenizer, name))
    return AutoModelForCausalLM.from_config(AutoConfig.for_model(model_type, **kwargs), trust_remote_code=False)


def decoder_layers(model: nn.Module) -> nn.ModuleList:
    """The decoder layer list of a Llama/Qwen2/Mistral (``model.layers``) or GPT-2 (``transformer.h``) LM."""
    for path in (("model", "layers"), ("transformer", "h"), ("model", "decoder", "layers")):
        module: Any = model
        for name in path:
            module = getattr(module, name, None)
            if module is None:
                break
        if isinstance(module, nn.ModuleList):
            return module
    raise TypeError(
        f"cannot find decoder layers in {type(model).__name__}; depth_upscale supports HF causal LMs "
        "with model.layers (Llama, Qwen2, Mistral) or transformer.h (GPT-2)"
    )


def _set_layer_count(config: Any, n: int, old_n: int, new_positions: Sequence[int]) -> None:
    for name in ("num_hidden_layers", "n_layer"):
        if hasattr(config, name):
            setattr(config, name, n)
    layer_types = getattr(config, "layer_types", None)
    if isinstance(layer_types, list) and len(layer_types) == old_n:
        # A copied layer keeps the attention type (sliding/full) of the layer it copies.
        new = list(layer_types)
        for pos in sorted(new_positions):
            new.insert(pos, new[pos - 1])
        config.layer_types = new


def depth_upscale(model: nn.Module, insert_every: int = 1, zero_init: bool = True) -> list[int]:
    """Insert a copy of the last layer after every ``insert_every`` decoder layers, in place.

    Block expansion of LLaMA Pro (Wu et al. 2024, Sec. 3.2, our reading of its Eq. for the
    identity block): the copy's output projections are zero-initialised (``zero_init``), so
    ``x + Attn(...) = x`` and ``x + MLP(...) = x`` and the up-scaled model computes exactly the
    original function. ``layer_idx`` attributes (KV cache slots) and the config's layer count
    are updated; the new indices are stored as ``config.sia_new_layers`` so a reloaded model
    keeps its freezing policy.

    Args:
        model: an HF causal LM (see :func:`decoder_layers`).
        insert_every: group size ``k``; ``L`` layers become ``L + floor(L / k)``.
        zero_init: zero the copies' output projections (identity blocks).

    Returns:
        Indices of the inserted layers in the new layer list.
    """
    check_int_at_least("insert_every", insert_every, 1)
    layers = decoder_layers(model)
    old = list(layers)
    if insert_every > len(old):
        raise ValueError(f"insert_every={insert_every} exceeds the model's {len(old)} decoder layers")
    new_layers: list[nn.Module] = []
    new_positions: list[int] = []
    for i, layer in enumerate(old):
        new_layers.append(layer)
        if (i + 1) % insert_every == 0:
            copy_ = copy.deepcopy(layer)
            if zero_init:
                zeroed = 0
                for parent, child in _OUTPUT_PROJECTIONS:
                    proj = getattr(getattr(copy_, parent, None), child, None)
                    if proj is None:
                        continue
                    with torch.no_grad():
                        proj.weight.zero_()
                        if getattr(proj, "bias", None) is not None:
                            proj.bias.zero_()
                    zeroed += 1
                if zeroed < 2:
                    raise TypeError(f"cannot find the output projections of {type(layer).__name__} to zero-initialise")
            new_positions.append(len(new_layers))
            new_layers.append(copy_)
    for idx, layer in enumerate(new_layers):
        for sub in layer.modules():
            if hasattr(sub, "layer_idx") and isinstance(sub.layer_idx, int):
                sub.layer_idx = idx
    # Re-register in order (ModuleList has no slice assignment); the list object stays the same.
    for key in list(layers._modules):
        del layers._modules[key]
    for layer in new_layers:
        layers.append(layer)
    config = getattr(model, "config", None)
    if config is not None:
        # Layers inserted by an earlier call keep their "new" status at their shifted index.
        earlier = {id(old[i]) for i in (getattr(config, "sia_new_layers", None) or []) if i < len(old)}
        shifted = [j for j, layer in enumerate(new_layers) if id(layer) in earlier]
        _set_layer_count(config, len(new_layers), len(old), new_positions)
        config.sia_new_layers = sorted(set(shifted) | set(new_positions))
    return new_positions


def freeze_for_injection(
    model: nn.Module, new_layers: Sequence[int] | None = None, train_embeddings: bool = False
) -> list[str]:
    """Train only the up-scaled layers (LLaMA Pro / SIA): everything else gets ``requires_grad=False``.

    Args:
        model: the up-scaled LM.
        new_layers: indices of trainable layers; default ``model.config.sia_new_layers``.
        train_embeddings: also train input embeddings and the LM head. Our reading: the paper's
            base already knows its vocabulary; a from-scratch toy model does not, so configs of
            tiny models turn this on.

    Returns:
        Names of the trainable parameters.
    """
    if new_layers is None:
        new_layers = list(getattr(getattr(model, "config", None), "sia_new_layers", []) or [])
    layers = decoder_layers(model)
    if not new_layers:
        raise ValueError("new_layers is empty and the model has no config.sia_new_layers; call depth_upscale first")
    bad = [i for i in new_layers if not 0 <= int(i) < len(layers)]
    if bad:
        raise ValueError(f"new_layers {bad} out of range for {len(layers)} decoder layers")
    for p in model.parameters():
        p.requires_grad_(False)
    for i in new_layers:
        for p in layers[int(i)].parameters():
            p.requires_grad_(True)
    if train_embeddings:
        for module in (model.get_input_embeddings(), model.get_output_embeddings()):
            if module is not None:
                for p in module.parameters():
                    p.requires_grad_(True)
    return [n for n, p in model.named_parameters() if p.requires_grad]


def collate_lm(samples: Sequence[Mapping[str, Any]], pad_id: int) -> dict[str, Tensor]:
    """Right-padded LM batch from ``{"ids": [...]}`` samples; loss on every real token."""
    seqs = [list(s["ids"]) for s in samples]
    length = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), length), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), length), dtype=torch.long)
    for i, s in enumerate(seqs):
        ids[i, : len(s)] = torch.tensor(s)
        mask[i, : len(s)] = 1
    labels = ids.masked_fill(mask == 0, IGNORE_INDEX)
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}


def collate_sft(samples: Sequence[Mapping[str, Any]], pad_id: int) -> dict[str, Any]:
    """Right-padded SFT batch from ``{"prompt_ids", "response_ids", "task_id", "harmful"}`` samples.

    ``labels`` are ``-100`` on prompt and padding, so the loss covers answer tokens only;
    ``prompt_mask`` marks the prompt positions an embedding attack may perturb.
    """
    seqs = [list(s["prompt_ids"]) + list(s["response_ids"]) for s in samples]
    length = max(len(s) for s in seqs)
    batch = len(seqs)
    ids = torch.full((batch, length), pad_id, dtype=torch.long)
    mask = torch.zeros((batch, length), dtype=torch.long)
    labels = torch.full((batch, length), IGNORE_INDEX, dtype=torch.long)
    prompt_mask = torch.zeros((batch, length), dtype=torch.bool)
    for i, (s, sample) in enumerate(zip(seqs, samples, strict=False)):
        p = len(sample["prompt_ids"])
        ids[i, : len(s)] = torch.tensor(s)
        mask[i, : len(s)] = 1
        labels[i, p: len(s)] = torch.tensor(sample["response_ids"])
        prompt_mask[i, :p] = True
    return {
        "input_ids": ids, "attention_mask": mask, "labels": labels, "prompt_mask": prompt_mask,
        "task_id": torch.tensor([int(s.get("task_id", 0)) for s in samples], dtype=torch.long),
        "harmful": torch.tensor([bool(s.get("harmful", False)) for s in samples], dtype=torch.bool),
    }


def response_loss(logits: Tensor, labels: Tensor) -> Tensor:
    """Per-sample mean next-token cross-entropy over the labelled (answer) tokens, shape ``(B,)``."""
    shift_logits = logits[:, :-1].float()
    shift_labels = labels[:, 1:]
    token = F.cross_entropy(shift_logits.transpose(1, 2), shift_labels, ignore_index=IGNORE_INDEX, reduction="none")
    counts = (shift_labels != IGNORE_INDEX).sum(1).clamp_min(1)
    return token.sum(1) / counts


def embedding_pgd(
    model: nn.Module,
    input_ids: Tensor,
    attention_mask: Tensor,
    labels: Tensor,
    prompt_mask: Tensor,
    eps: float | Tensor,
    alpha: float,
    steps: int,
    generator: torch.Generator | None = None,
    lockstep: bool = False,
) -> Tensor:
    """Embedding-space attack: the perturbation ``delta`` of the prompt token embeddings.

    Maximises the per-sample loss of the safe response (:func:`response_loss` on ``labels``)
    with :func:`robust_lightning.attacks.core.pgd` in the L-inf ball of radius ``eps`` (a float
    or per-sample ``(B,)``; 0 leaves a sample clean). Only prompt positions move: the loss is
    evaluated at ``e + (e_adv - e) * prompt_mask``. Embeddings are unbounded, so the core's
    clamp gets bounds wide enough never to bind. The model runs in eval mode with frozen
    parameters (``attack_mode``), as the attack-context contract asks.

    ``lockstep`` is for a model sharded with :func:`shard_causal_lm`: each forward all-gathers the
    weights, a collective every rank must join, so a rank whose budget is all zero (no harmful
    sample in its share of the batch) still runs the ``steps`` forward/backward passes, on the
    clean embeddings, and returns a zero ``delta``. Without it that rank would skip them (the
    attack core returns early on a zero budget) and the ranks would deadlock.

    Returns:
        ``delta`` (detached, zero outside the prompt), to be added to ``embed(input_ids)``.
    """
    embed = model.get_input_embeddings()
    with torch.no_grad():
        clean = embed(input_ids).detach()
    mask = prompt_mask.unsqueeze(-1).to(clean.dtype)
    eps_max = float(eps.max()) if isinstance(eps, Tensor) else float(eps)

    def loss_fn(e: Tensor) -> Tensor:
        inputs = clean + (e - clean) * mask
        logits = model(inputs_embeds=inputs, attention_mask=attention_mask).logits
        return response_loss(logits, labels)

    if steps == 0 or eps_max <= 0:
        if lockstep and steps > 0:
            # Join the other ranks' attack passes (see the docstring); the result is discarded.
            with attack_mode(model, "eval"), torch.inference_mode(False), torch.enable_grad():
                e = clean.clone().requires_grad_(True)
                for _ in range(steps):
                    torch.autograd.grad(loss_fn(e).sum(), e)
        return torch.zeros_like(clean)
    margin = 2 * eps_max + 1.0
    bounds = (float(clean.min()) - margin, float(clean.max()) + margin)

    with attack_mode(model, "eval"):
        adv = pgd(loss_fn, clean, eps=eps, alpha=alpha, steps=steps, norm="linf", random_start=True,
                  bounds=bounds, generator=generator)
    return ((adv - clean) * mask).detach()


def embedding_noise(
    prompt_mask: Tensor,
    embed_dim: int,
    eps: float | Tensor,
    generator: torch.Generator | None = None,
    dtype: torch.dtype = torch.float32,
) -> Tensor:
    """Random L-inf noise of :func:`embedding_pgd`'s budget on the prompt embeddings.

    Every prompt coordinate moves by ``±eps`` with a random sign: a corner of the L-inf ball,
    where the signed-gradient PGD also ends up, so the noise has the attack's size and only its
    direction is blind. It is the noise-augmentation control of the adversarial alignment
    (``SIAAlign(adv_perturbation="noise")``): no forward or backward pass, nothing to attack.

    Args:
        prompt_mask: ``(B, T)`` bool, the positions that may move.
        embed_dim: embedding width.
        eps: L-inf radius, a float or per-sample ``(B,)`` (0 leaves a sample clean).
        generator: randomness of the signs (on ``prompt_mask``'s device).
        dtype: dtype of the returned ``delta``.

    Returns:
        ``delta`` of shape ``(B, T, embed_dim)``, zero outside the prompt.
    """
    batch, length = prompt_mask.shape
    device = prompt_mask.device
    signs = torch.randint(0, 2, (batch, length, embed_dim), generator=generator, device=device).to(dtype) * 2 - 1
    radius = eps.reshape(-1, 1, 1).to(device=device, dtype=dtype) if isinstance(eps, Tensor) else float(eps)
    return signs * radius * prompt_mask.unsqueeze(-1).to(dtype)


@torch.no_grad()
def suffix_search(
    model: nn.Module,
    prompt_ids: Sequence[int],
    response_ids: Sequence[int],
    candidate_tokens: Tensor,
    suffix_len: int,
    num_candidates: int,
    marker_len: int,
    generator: torch.Generator | None = None,
) -> list[int]:
    """Best-of-K random adversarial suffix: the prompt (with ``suffix_len`` tokens inserted before
    its last ``marker_len`` tokens, the answer marker) that maximises the response loss.

    A gradient-free stand-in for GCG-style suffix attacks (our reading of the paper's
    "adversarial suffixes"; K candidates scored in one batch).
    """
    device = next(model.parameters()).device
    picks = torch.randint(len(candidate_tokens), (num_candidates, suffix_len), generator=generator,
                          device=candidate_tokens.device)
    suffixes = candidate_tokens[picks].tolist()
    head, marker = list(prompt_ids[: len(prompt_ids) - marker_len]), list(prompt_ids[len(prompt_ids) - marker_len:])
    prompts = [head + s + marker for s in suffixes]
    seq = [p + list(response_ids) for p in prompts]
    ids = torch.tensor(seq, device=device)
    labels = ids.clone()
    labels[:, : len(prompts[0])] = IGNORE_INDEX
    losses = response_loss(model(input_ids=ids).logits, labels)
    return prompts[int(losses.argmax())]


@torch.no_grad()
def greedy_generate(
    model: nn.Module,
    prompts: Sequence[Sequence[int]],
    max_new_tokens: int,
    eos_id: int,
    deltas: Sequence[Tensor] | None = None,
) -> list[list[int]]:
    """Greedy continuation of each prompt (grouped by length, no padding, no KV cache: tiny models).

    ``deltas[i]`` (``(len(prompts[i]), D)``) perturbs prompt ``i``'s embeddings (embedding attack).
    Generation stops at ``eos_id``; it is not included in the output.
    """
    embed = model.get_input_embeddings()
    device = embed.weight.device
    outputs: list[list[int]] = [[] for _ in prompts]
    groups: dict[int, list[int]] = {}
    for i, p in enumerate(prompts):
        groups.setdefault(len(p), []).append(i)
    for idx in groups.values():
        ids = torch.tensor([list(prompts[i]) for i in idx], device=device)
        emb = embed(ids)
        if deltas is not None:
            emb = emb + torch.stack([deltas[i].to(device=device, dtype=emb.dtype) for i in idx])
        done = torch.zeros(len(idx), dtype=torch.bool, device=device)
        for _ in range(max_new_tokens):
            logits = model(inputs_embeds=emb).logits[:, -1]
            nxt = logits.argmax(-1)
            for j, i in enumerate(idx):
                if not done[j] and int(nxt[j]) != eos_id:
                    outputs[i].append(int(nxt[j]))
            done |= nxt == eos_id
            if bool(done.all()):
                break
            emb = torch.cat([emb, embed(nxt).unsqueeze(1)], dim=1)
    return outputs


# --- FSDP2 sharding -----------------------------------------------------------------------------
def is_sharded(model: nn.Module) -> bool:
    """Whether ``model`` was sharded with FSDP2 (``fully_shard``, e.g. by :func:`shard_causal_lm`)."""
    from torch.distributed.fsdp import FSDPModule

    return isinstance(model, FSDPModule)


def shard_causal_lm(model: nn.Module, mesh: Any, broadcast_from_rank0: bool = False) -> nn.Module:
    """Shard an HF causal LM in place with FSDP2 (``fully_shard``) over the 1-D device ``mesh``.

    FSDP units: every decoder layer (:func:`decoder_layers`), the input embedding (grouped with
    the LM head when their weights are tied, GPT-2 style, so the shared table is one parameter),
    and the root (final norm, untied head); each reshards after forward. The embedding is a unit
    of its own because SIA calls it directly, outside the model's forward (the embedding attack's
    clean embeddings, the adversarial forward's ``inputs_embeds``, generation): its own hooks
    all-gather the table for such a call, where a table owned by the root would stay a sharded
    ``DTensor`` and fail. The root then runs one forward on a single token: FSDP2 initialises
    lazily at the first forward of the root, and a unit called directly before that would claim
    the root role and break every later forward.

    Args:
        model: an HF causal LM, identical on every rank of ``mesh`` (or see below).
        mesh: a 1-D ``DeviceMesh`` (Lightning's ``ModelParallelStrategy`` gives
            ``device_mesh["data_parallel"]``); parameters move to its device type.
        broadcast_from_rank0: copy rank 0's parameters and buffers to the other ranks first, for
            a randomly initialised model whose ranks might not share a seed.

    Returns:
        ``model`` (now an ``FSDPModule``).
    """
    import torch.distributed as dist
    from torch.distributed.fsdp import fully_shard

    if getattr(mesh, "ndim", None) != 1:
        raise ValueError(f"mesh must be a 1-D DeviceMesh (data-parallel ranks), got {mesh!r}")
    if is_sharded(model):
        raise ValueError("model is already sharded")
    layers = decoder_layers(model)
    embed, head = model.get_input_embeddings(), model.get_output_embeddings()
    if broadcast_from_rank0:
        group = mesh.get_group()
        src = dist.get_global_rank(group, 0)
        device = torch.device(mesh.device_type)
        with torch.no_grad():
            for t in [*model.parameters(), *model.buffers()]:
                moved = t.data.to(device)
                dist.broadcast(moved, src=src, group=group)
                t.data.copy_(moved.to(t.device))
    for layer in layers:
        fully_shard(layer, mesh=mesh, reshard_after_forward=True)
    tied = head is not None and getattr(head, "weight", None) is embed.weight
    fully_shard([embed, head] if tied else embed, mesh=mesh, reshard_after_forward=True)
    # The root reshards after forward too (FSDP2's default keeps it gathered until backward).
    # FSDP2 copies requires_grad from the sharded to the gathered parameters only when it
    # gathers; attack_mode freezes whichever parameters are registered when it starts. A root
    # left gathered by a no-grad forward under attack_mode (suffix search) would stay frozen
    # through the next forward and silently lose the head's and final norm's gradients.
    fully_shard(model, mesh=mesh, reshard_after_forward=True)
    device = next(iter(embed.parameters())).device
    token = getattr(getattr(model, "config", None), "bos_token_id", None) or 0
    flags = [(m, m.training) for m in model.modules()]
    model.eval()  # no dropout: the initialising forward must not draw from the global RNG
    try:
        with torch.no_grad():
            model(input_ids=torch.tensor([[int(token)]], device=device))
    finally:
        for m, flag in flags:
            m.training = flag
    return model


@contextlib.contextmanager
def gathered_parameters(model: nn.Module) -> Iterator[nn.Module]:
    """All-gather a :func:`shard_causal_lm` model's weights once and keep them for the block.

    Inside, forward and input-gradient passes run on the local full weights with no collective,
    so a rank may run as many of them as its own data needs: greedy generation (lengths, early
    stop), evaluation attacks, suffix search. Every rank must enter and leave together (the
    gather is a collective). Costs one full copy of the weights per device, like FSDP1's
    ``summon_full_params``. Do not train inside: gradients are neither reduced nor sharded.
    A model that is not sharded passes through unchanged.
    """
    from torch.distributed.fsdp import FSDPModule

    units = [m for m in model.modules() if isinstance(m, FSDPModule)]
    if not units:
        yield model
        return
    for unit in units:
        unit.set_reshard_after_forward(False, recurse=False)
        unit.set_reshard_after_backward(False, recurse=False)
        unit.unshard()
    try:
        yield model
    finally:
        for unit in units:
            # Back to the policy of shard_causal_lm: every unit reshards after forward and backward.
            unit.set_reshard_after_forward(True, recurse=False)
            unit.set_reshard_after_backward(True, recurse=False)
            unit.reshard()


def embedding_std(weight: Tensor) -> float:
    """Standard deviation (unbiased) of an embedding table, sharded (FSDP2 ``DTensor``) or not.

    A sharded table is reduced through its first two moments (two scalar all-reduces, collectives
    every rank must call) rather than gathered.
    """
    from torch.distributed.tensor import DTensor

    w = weight.detach()
    if not isinstance(w, DTensor):
        return float(w.float().std())
    w64 = w.to(torch.float64)
    n = w.numel()
    total = w64.sum().full_tensor()
    squares = (w64 * w64).sum().full_tensor()
    var = (squares - total * total / n) / max(n - 1, 1)
    return float(var.clamp_min(0.0).sqrt())
