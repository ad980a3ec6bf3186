#!/usr/bin/env python3
"""torch_reference: the PyTorch side of `make bench-compare`, and the generator of the golden
numbers in tests/test_parity.c.

The model is Hugging Face's LlamaForCausalLM written out by hand in plain PyTorch (transformers
and PEFT are not installable here), following transformers' modeling_llama.py op by op:

  * LlamaRMSNorm: upcast to fp32, variance = mean(x^2), x * rsqrt(variance + eps) (eps inside the
    root), cast back, then weight * x.
  * LlamaRotaryEmbedding: inv_freq = 1 / base ** (arange(0, d, 2).float() / d) in fp32; angles as
    the fp32 product inv_freq x position; cos/sin of cat(freqs, freqs); rotate_half on the split
    halves: x * cos + cat(-x2, x1) * sin.
  * Eager attention: q, k, v projections, RoPE, repeat_kv for grouped kv heads,
    (q @ k^T) * head_dim^-0.5 + causal mask (finfo.min above the diagonal), softmax in fp32,
    @ v, o_proj.
  * LlamaMLP: down(silu(gate(x)) * up(x)).
  * Final norm, lm_head (tied to embed_tokens when tie_word_embeddings).
  * ForCausalLMLoss: logits.float(), cross-entropy with ignore_index -100, mean over counted rows;
    the labels come already shifted (HF's shift_labels), as loralab's Batch.targets are.
  * LoRA as PEFT's lora.Linear (peft-spec.md section 1): the base layer frozen,
    result = base(x) + lora_B(lora_A(dropout(x))) * (alpha / r), dropout 0 (identity).

Inputs are the files bench/bench_compare.c (or tests/test_parity.c) writes: DIR/model (config.json +
model.safetensors, read here with a small reader of the safetensors format), DIR/lora
(adapter_config.json + adapter_model.safetensors, PEFT names) and DIR/batch.bin (int32 B, T,
ids[B*T], targets[B*T]).

  torch_reference.py run DIR full|lora STEPS [--threads N]
      1 warm-up step + STEPS timed steps of AdamW (lr 1e-3, betas 0.9/0.999, eps 1e-8, weight
      decay 0.01 on matrices and LoRA factors, none on norms) on the batch; prints one JSON object
      with the same keys as bench_compare (first_loss, losses, median_step_s, tokens_per_s,
      peak_rss_mb, threads, kernels) plus max_abs_logit_diff against DIR/logits_loralab_METHOD.bin
      when loralab's side has written it.
  torch_reference.py golden DIR
      the numbers tests/test_parity.c checks, for its fixture, as C source to paste into it; also
      the same numbers computed in float64, to show how far each fp32 side is from exact.
"""
import argparse
import ctypes
import json
import os
import resource
import struct
import time

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

LR, BETAS, ADAM_EPS, WEIGHT_DECAY = 1e-3, (0.9, 0.999), 1e-8, 0.01
N_LOGIT_POS = 4  # first, second, middle and last position of every row, as bench_compare writes

# The fp32 reference follows HF exactly (RMSNorm and softmax computed in fp32). For the float64
# reference those upcasts must not round to fp32, so they go to this dtype instead.
COMPUTE_DTYPE = torch.float32


# ---- files ---------------------------------------------------------------------------------

def read_safetensors(path):
    """{name: float32 tensor}. Format: u64 little-endian header length, JSON header
    {name: {dtype, shape, data_offsets}}, then the data; offsets are relative to the data start.
    Each tensor is read straight into its own buffer (no second copy of the file in memory)."""
    out = {}
    with open(path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(n))
        base = 8 + n
        for name, info in header.items():
            if name == "__metadata__":
                continue
            if info["dtype"] != "F32":
                raise ValueError(f"{path}: tensor {name} is {info['dtype']}, only F32 is read")
            start, end = info["data_offsets"]
            t = torch.empty(info["shape"], dtype=torch.float32)
            if end - start != t.numel() * 4:
                raise ValueError(f"{path}: tensor {name}: {end - start} bytes for shape {info['shape']}")
            f.seek(base + start)
            f.readinto(memoryview(t.numpy()).cast("B"))
            out[name] = t
    return out


def read_batch(dir_):
    raw = np.fromfile(os.path.join(dir_, "batch.bin"), dtype="<i4")
    B, T = int(raw[0]), int(raw[1])
    if raw.size != 2 + 2 * B * T:
        raise ValueError("batch.bin has the wrong size")
    ids = torch.from_numpy(raw[2:2 + B * T].astype(np.int64)).view(B, T)
    targets = torch.from_numpy(raw[2 + B * T:].astype(np.int64)).view(B, T)
    return ids, targets


# ---- the model (HF LlamaForCausalLM, hand-written) -------------------------------------------

class LlamaRMSNorm(nn.Module):
    def __init__(self, hidden_size, eps):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(hidden_size))
        self.variance_epsilon = eps

    def forward(self, hidden_states):
        input_dtype = hidden_states.dtype
        hidden_states = hidden_states.to(COMPUTE_DTYPE if input_dtype != torch.float64 else torch.float64)
        variance = hidden_states.pow(2).mean(-1, keepdim=True)
        hidden_states = hidden_states * torch.rsqrt(variance + self.variance_epsilon)
        return self.weight * hidden_states.to(input_dtype)


class LlamaRotaryEmbedding(nn.Module):
    def __init__(self, dim, base, dtype):
        super().__init__()
        inv_freq = 1.0 / (base ** (torch.arange(0, dim, 2, dtype=torch.int64).float() / dim))
        self.register_buffer("inv_freq", inv_freq.to(dtype), persistent=False)

    @torch.no_grad()
    def forward(self, x, position_ids):
        inv_freq_expanded = self.inv_freq[None, :, None].expand(position_ids.shape[0], -1, 1)
        position_ids_expanded = position_ids[:, None, :].to(self.inv_freq.dtype)
        freqs = (inv_freq_expanded @ position_ids_expanded).transpose(1, 2)
        emb = torch.cat((freqs, freqs), dim=-1)
        return emb.cos().to(x.dtype), emb.sin().to(x.dtype)


def rotate_half(x):
    x1 = x[..., : x.shape[-1] // 2]
    x2 = x[..., x.shape[-1] // 2:]
    return torch.cat((-x2, x1), dim=-1)


def apply_rotary_pos_emb(q, k, cos, sin):
    cos, sin = cos.unsqueeze(1), sin.unsqueeze(1)
    return (q * cos) + (rotate_half(q) * sin), (k * cos) + (rotate_half(k) * sin)


def repeat_kv(hidden_states, n_rep):
    batch, num_key_value_heads, slen, head_dim = hidden_states.shape
    if n_rep == 1:
        return hidden_states
    hidden_states = hidden_states[:, :, None, :, :].expand(batch, num_key_value_heads, n_rep, slen, head_dim)
    return hidden_states.reshape(batch, num_key_value_heads * n_rep, slen, head_dim)


class LoraLinear(nn.Module):
    """PEFT's lora.Linear for one adapter: y = base(x) + lora_B(lora_A(dropout(x))) * scaling."""

    def __init__(self, base_layer, r, alpha):
        super().__init__()
        self.base_layer = base_layer
        self.lora_A = nn.Linear(base_layer.in_features, r, bias=False)
        self.lora_B = nn.Linear(r, base_layer.out_features, bias=False)
        self.lora_dropout = nn.Identity()
        self.scaling = alpha / r

    def forward(self, x):
        result = self.base_layer(x)
        x = x.to(self.lora_A.weight.dtype)
        return result + self.lora_B(self.lora_A(self.lora_dropout(x))) * self.scaling


class LlamaAttention(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.head_dim = cfg["head_dim"]
        self.num_heads = cfg["num_attention_heads"]
        self.num_key_value_heads = cfg["num_key_value_heads"]
        self.num_key_value_groups = self.num_heads // self.num_key_value_heads
        self.scaling = self.head_dim ** -0.5
        hidden = cfg["hidden_size"]
        self.q_proj = nn.Linear(hidden, self.num_heads * self.head_dim, bias=False)
        self.k_proj = nn.Linear(hidden, self.num_key_value_heads * self.head_dim, bias=False)
        self.v_proj = nn.Linear(hidden, self.num_key_value_heads * self.head_dim, bias=False)
        self.o_proj = nn.Linear(self.num_heads * self.head_dim, hidden, bias=False)

    def forward(self, hidden_states, position_embeddings, attention_mask):
        input_shape = hidden_states.shape[:-1]
        hidden_shape = (*input_shape, -1, self.head_dim)
        query_states = self.q_proj(hidden_states).view(hidden_shape).transpose(1, 2)
        key_states = self.k_proj(hidden_states).view(hidden_shape).transpose(1, 2)
        value_states = self.v_proj(hidden_states).view(hidden_shape).transpose(1, 2)
        cos, sin = position_embeddings
        query_states, key_states = apply_rotary_pos_emb(query_states, key_states, cos, sin)
        # eager_attention_forward
        key_states = repeat_kv(key_states, self.num_key_value_groups)
        value_states = repeat_kv(value_states, self.num_key_value_groups)
        attn_weights = torch.matmul(query_states, key_states.transpose(2, 3)) * self.scaling
        attn_weights = attn_weights + attention_mask
        softmax_dtype = torch.float64 if attn_weights.dtype == torch.float64 else COMPUTE_DTYPE
        attn_weights = F.softmax(attn_weights, dim=-1, dtype=softmax_dtype).to(query_states.dtype)
        attn_output = torch.matmul(attn_weights, value_states)
        attn_output = attn_output.transpose(1, 2).contiguous()
        attn_output = attn_output.reshape(*input_shape, -1).contiguous()
        return self.o_proj(attn_output)


class LlamaMLP(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        hidden, inter = cfg["hidden_size"], cfg["intermediate_size"]
        self.gate_proj = nn.Linear(hidden, inter, bias=False)
        self.up_proj = nn.Linear(hidden, inter, bias=False)
        self.down_proj = nn.Linear(inter, hidden, bias=False)

    def forward(self, x):
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class LlamaDecoderLayer(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.self_attn = LlamaAttention(cfg)
        self.mlp = LlamaMLP(cfg)
        self.input_layernorm = LlamaRMSNorm(cfg["hidden_size"], cfg["rms_norm_eps"])
        self.post_attention_layernorm = LlamaRMSNorm(cfg["hidden_size"], cfg["rms_norm_eps"])

    def forward(self, hidden_states, position_embeddings, attention_mask):
        residual = hidden_states
        hidden_states = self.input_layernorm(hidden_states)
        hidden_states = self.self_attn(hidden_states, position_embeddings, attention_mask)
        hidden_states = residual + hidden_states
        residual = hidden_states
        hidden_states = self.post_attention_layernorm(hidden_states)
        hidden_states = self.mlp(hidden_states)
        return residual + hidden_states


class LlamaModel(nn.Module):
    def __init__(self, cfg, dtype):
        super().__init__()
        self.embed_tokens = nn.Embedding(cfg["vocab_size"], cfg["hidden_size"])
        self.layers = nn.ModuleList(LlamaDecoderLayer(cfg) for _ in range(cfg["num_hidden_layers"]))
        self.norm = LlamaRMSNorm(cfg["hidden_size"], cfg["rms_norm_eps"])
        self.rotary_emb = LlamaRotaryEmbedding(cfg["head_dim"], cfg["rope_theta"], dtype)

    def forward(self, input_ids):
        inputs_embeds = self.embed_tokens(input_ids)
        B, T = input_ids.shape
        position_ids = torch.arange(T).unsqueeze(0)
        min_dtype = torch.finfo(inputs_embeds.dtype).min
        causal_mask = torch.triu(torch.full((T, T), min_dtype, dtype=inputs_embeds.dtype), diagonal=1)[None, None]
        hidden_states = inputs_embeds
        position_embeddings = self.rotary_emb(hidden_states, position_ids)
        for layer in self.layers:
            hidden_states = layer(hidden_states, position_embeddings, causal_mask)
        return self.norm(hidden_states)


def for_causal_lm_loss(logits, shift_labels, vocab_size, ignore_index=-100):
    """HF's ForCausalLMLoss with shift_labels given: mean cross-entropy over non-ignored rows."""
    logits = logits.float() if logits.dtype != torch.float64 else logits
    return F.cross_entropy(logits.view(-1, vocab_size), shift_labels.view(-1), ignore_index=ignore_index,
                           reduction="mean")


class LlamaForCausalLM(nn.Module):
    def __init__(self, cfg, dtype=torch.float32):
        super().__init__()
        self.cfg = cfg
        self.model = LlamaModel(cfg, dtype)
        self.lm_head = nn.Linear(cfg["hidden_size"], cfg["vocab_size"], bias=False)
        if cfg["tie_word_embeddings"]:
            self.lm_head.weight = self.model.embed_tokens.weight

    def forward(self, input_ids, shift_labels):
        logits = self.lm_head(self.model(input_ids))
        return logits, for_causal_lm_loss(logits, shift_labels, self.cfg["vocab_size"])


def load_config(model_dir):
    with open(os.path.join(model_dir, "config.json")) as f:
        cfg = json.load(f)
    cfg.setdefault("head_dim", cfg["hidden_size"] // cfg["num_attention_heads"])
    cfg.setdefault("num_key_value_heads", cfg["num_attention_heads"])
    cfg.setdefault("tie_word_embeddings", False)
    if "rope_parameters" in cfg:  # transformers v5 spelling
        cfg["rope_theta"] = cfg["rope_parameters"].get("rope_theta", cfg.get("rope_theta", 10000.0))
    cfg.setdefault("rope_theta", 10000.0)
    if cfg.get("rope_scaling") not in (None, {}):
        raise ValueError("rope_scaling is not implemented in this reference")
    return cfg


def build_model(dir_, method, dtype=torch.float32):
    """The model of DIR/model (and the adapter of DIR/lora for method lora), trainable parameters
    marked, and the AdamW parameter groups."""
    model_dir = os.path.join(dir_, "model")
    cfg = load_config(model_dir)
    model = LlamaForCausalLM(cfg, dtype)
    weights = read_safetensors(os.path.join(model_dir, "model.safetensors"))
    if cfg["tie_word_embeddings"]:
        weights.pop("lm_head.weight", None)
    missing, unexpected = model.load_state_dict(weights, strict=False)
    missing = [k for k in missing if not (cfg["tie_word_embeddings"] and k == "lm_head.weight")]
    if missing or unexpected:
        raise ValueError(f"model.safetensors: missing {missing}, unexpected {unexpected}")
    del weights
    model.to(dtype)
    if method == "full":
        decay = [p for n, p in model.named_parameters() if p.dim() == 2]
        no_decay = [p for n, p in model.named_parameters() if p.dim() < 2]
        groups = [{"params": decay, "weight_decay": WEIGHT_DECAY}, {"params": no_decay, "weight_decay": 0.0}]
        return model, groups
    lora_dir = os.path.join(dir_, "lora")
    with open(os.path.join(lora_dir, "adapter_config.json")) as f:
        acfg = json.load(f)
    if acfg.get("use_rslora") or acfg.get("use_dora") or acfg.get("lora_dropout", 0) or acfg.get("rank_pattern") \
            or acfg.get("alpha_pattern") or acfg.get("layers_to_transform"):
        raise ValueError("the reference implements plain LoRA (no rsLoRA, DoRA, dropout, patterns, layer lists)")
    r, alpha, targets = acfg["r"], acfg["lora_alpha"], acfg["target_modules"]
    tensors = read_safetensors(os.path.join(lora_dir, "adapter_model.safetensors"))
    for p in model.parameters():
        p.requires_grad_(False)
    params = []
    for i, layer in enumerate(model.model.layers):
        for parent_name, parent in (("self_attn", layer.self_attn), ("mlp", layer.mlp)):
            for name, child in list(parent.named_children()):
                if name not in targets:
                    continue
                wrapped = LoraLinear(child, r, alpha)
                prefix = f"base_model.model.model.layers.{i}.{parent_name}.{name}."
                with torch.no_grad():
                    wrapped.lora_A.weight.copy_(tensors[prefix + "lora_A.weight"])
                    wrapped.lora_B.weight.copy_(tensors[prefix + "lora_B.weight"])
                wrapped.to(dtype)
                setattr(parent, name, wrapped)
                params += [wrapped.lora_A.weight, wrapped.lora_B.weight]
    if not params:
        raise ValueError(f"no module matched target_modules {targets}")
    return model, [{"params": params, "weight_decay": WEIGHT_DECAY}]


# ---- which BLAS ran -----------------------------------------------------------------------------

def blas_info():
    """The OpenBLAS library this process loaded (from /proc/self/maps), its kernels and config."""
    libs = []
    with open("/proc/self/maps") as f:
        for line in f:
            path = line.split()[-1]
            name = os.path.basename(path)
            if path.startswith("/") and "blas" in name and ".so" in name and path not in libs:
                libs.append(path)
    libs.sort(key=lambda p: "openblas" not in os.path.basename(p))  # the library itself first
    info = {"blas_libraries": libs, "kernels": "unknown", "blas_config": "unknown", "blas_threads": -1}
    for path in libs:
        try:
            lib = ctypes.CDLL(path)
            lib.openblas_get_corename.restype = ctypes.c_char_p
            lib.openblas_get_config.restype = ctypes.c_char_p
            info["kernels"] = lib.openblas_get_corename().decode()
            info["blas_config"] = lib.openblas_get_config().decode()
            info["blas_threads"] = lib.openblas_get_num_threads()
            break
        except (OSError, AttributeError):
            continue
    return info


def torch_cpu_capability():
    for line in torch.__config__.show().splitlines():
        if "CPU capability usage" in line:
            return line.split(":", 1)[1].strip()
    return "unknown"


# ---- run: the benchmark side -------------------------------------------------------------------

def logit_rows(logits):
    B, T, V = logits.shape
    pos = [0, 1, T // 2, T - 1]
    return logits[:, pos, :].reshape(B * N_LOGIT_POS, V).detach().clone()


def cmd_run(args):
    torch.set_num_threads(args.threads)
    ids, targets = read_batch(args.dir)
    model, groups = build_model(args.dir, args.method)
    model.train()
    opt = torch.optim.AdamW(groups, lr=LR, betas=BETAS, eps=ADAM_EPS, weight_decay=WEIGHT_DECAY)
    # the bf16 / autocast paths stay off: fp32 throughout, like loralab
    total = args.steps + 1
    times, losses, rows = [], [], None
    for i in range(total):
        t0 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        logits, loss = model(ids, targets)
        loss.backward()
        opt.step()
        times.append(time.perf_counter() - t0)
        losses.append(loss.item())
        if i == 0:
            rows = logit_rows(logits)
        del logits, loss
    step_s = float(np.median(times[1:]))
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux: KiB
    out = {"side": "torch", "method": args.method, "B": ids.shape[0], "T": ids.shape[1], "steps": args.steps,
           "first_loss": losses[0], "losses": losses, "step_s": times[1:], "warmup_step_s": times[0], "median_step_s": step_s,
           "tokens_per_s": ids.numel() / step_s, "peak_rss_mb": peak_mb,
           "trainable": sum(p.numel() for g in groups for p in g["params"]),
           "threads": torch.get_num_threads(), "torch": torch.__version__,
           "torch_cpu_capability": torch_cpu_capability(),
           "openblas_coretype": os.environ.get("OPENBLAS_CORETYPE", "unset")}
    out.update(blas_info())
    for suffix in ("", "_bf16"):  # loralab's fp32 and bf16-base logits, when it wrote them
        ref = os.path.join(args.dir, f"logits_loralab_{args.method}{suffix}.bin")
        if os.path.exists(ref):
            c_rows = torch.from_numpy(np.fromfile(ref, dtype="<f4")).view_as(rows)
            out["max_abs_logit_diff" + suffix] = (c_rows - rows).abs().max().item()
    out["max_abs_logit"] = rows.abs().max().item()
    print(json.dumps(out))


# ---- golden: numbers for tests/test_parity.c -----------------------------------------------------

GOLDEN_POINTS = [(0, 0, 0), (0, 3, 17), (0, 15, 95), (1, 0, 3), (1, 8, 50), (1, 15, 77)]  # (b, t, v)
GOLDEN_STEPS = 3


def golden_numbers(dir_, dtype):
    ids, targets = read_batch(dir_)
    out = {}
    model, _ = build_model(dir_, "full", dtype)
    with torch.no_grad():
        logits, loss = model(ids, targets)
    out["base_loss"] = loss.item()
    out["points"] = [logits[b, t, v].item() for b, t, v in GOLDEN_POINTS]
    out["logit_mean"] = logits.double().mean().item()
    out["logit_sq_mean"] = (logits.double() ** 2).mean().item()
    for method in ("lora", "full"):
        model, groups = build_model(dir_, method, dtype)
        opt = torch.optim.AdamW(groups, lr=LR, betas=BETAS, eps=ADAM_EPS, weight_decay=WEIGHT_DECAY)
        losses = []
        for _ in range(GOLDEN_STEPS + 1):
            opt.zero_grad(set_to_none=True)
            _, loss = model(ids, targets)
            losses.append(loss.item())
            loss.backward()
            opt.step()
        out[method + "_losses"] = losses
    return out


def cmd_golden(args):
    torch.set_num_threads(1)
    g32 = golden_numbers(args.dir, torch.float32)
    g64 = golden_numbers(args.dir, torch.float64)

    def arr(v):
        return ", ".join(f"{x:.9g}" for x in v)

    print(f"/* Generated by bench/torch_reference.py golden (torch {torch.__version__}, fp32, HF Llama op order). */")
    print(f"static const double GOLD_BASE_LOSS = {g32['base_loss']:.9g};")
    print(f"static const double GOLD_POINTS[{len(GOLDEN_POINTS)}] = {{{arr(g32['points'])}}};")
    print(f"static const double GOLD_LOGIT_MEAN = {g32['logit_mean']:.9g}, GOLD_LOGIT_SQ_MEAN = {g32['logit_sq_mean']:.9g};")
    print(f"static const double GOLD_LORA_LOSSES[{GOLDEN_STEPS + 1}] = {{{arr(g32['lora_losses'])}}};")
    print(f"static const double GOLD_FULL_LOSSES[{GOLDEN_STEPS + 1}] = {{{arr(g32['full_losses'])}}};")
    print("/* float64 reference (same ops in double), for judging which fp32 side is closer:")
    for k in ("base_loss", "points", "logit_mean", "logit_sq_mean", "lora_losses", "full_losses"):
        v32, v64 = g32[k], g64[k]
        if isinstance(v32, list):
            d = max(abs(a - b) for a, b in zip(v32, v64))
            print(f" * {k}: {arr(v64)}  (max |fp32 - fp64| {d:.3g})")
        else:
            print(f" * {k}: {v64:.12g}  (|fp32 - fp64| {abs(v32 - v64):.3g})")
    print(" */")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run", help="timed training steps, one JSON line")
    r.add_argument("dir")
    r.add_argument("method", choices=("full", "lora"))
    r.add_argument("steps", type=int)
    r.add_argument("--threads", type=int, default=int(os.environ.get("OMP_NUM_THREADS", "2") or 2))
    g = sub.add_parser("golden", help="C source of the golden numbers of tests/test_parity.c")
    g.add_argument("dir")
    args = ap.parse_args()
    if args.cmd == "run":
        if args.steps < 1:
            ap.error("steps must be at least 1")
        cmd_run(args)
    else:
        cmd_golden(args)


if __name__ == "__main__":
    main()
