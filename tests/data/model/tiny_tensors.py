#!/usr/bin/env python3
"""Writes tiny_tensors.txt: the checkpoint tensors of the `tiny` preset, one "name dtype shape" a
line, derived from the Hugging Face naming rules (dsa-reference.md §3.2, §5.1, §6, §7) independently
of the C++ layout code. Shapes of the tiny preset: vocab 1024, hidden 256, intermediate 512,
moe_intermediate 128, 2 layers (layer 0 dense), 1 MTP layer, 4 heads, q_lora 128, kv_lora 128,
qk_nope 32, qk_rope 64, v 32, 8 routed experts, 1 shared, indexer 4 heads x 128. FP8 weights carry
an F32 weight_scale_inv of [ceil(out/128), ceil(in/128)]."""

V, H, I, MI, HEADS, QL, KVL, NOPE, ROPE, VD, E, IH, ID = (
    1024, 256, 512, 128, 4, 128, 128, 32, 64, 32, 8, 4, 128)
lines = []


def add(name, dtype, shape):
    lines.append(f"{name} {dtype} {','.join(map(str, shape))}")


def fp8(name, out_dim, in_dim):
    add(name + ".weight", "F8_E4M3", [out_dim, in_dim])
    add(name + ".weight_scale_inv", "F32", [-(-out_dim // 128), -(-in_dim // 128)])


def layer(n, moe, mtp):
    p = f"model.layers.{n}."
    if mtp:
        add(p + "embed_tokens.weight", "BF16", [V, H])
        add(p + "enorm.weight", "BF16", [H])
        add(p + "hnorm.weight", "BF16", [H])
        add(p + "eh_proj.weight", "BF16", [H, 2 * H])
    add(p + "input_layernorm.weight", "BF16", [H])
    a = p + "self_attn."
    fp8(a + "q_a_proj", QL, H)
    add(a + "q_a_layernorm.weight", "BF16", [QL])
    fp8(a + "q_b_proj", HEADS * (NOPE + ROPE), QL)
    fp8(a + "kv_a_proj_with_mqa", KVL + ROPE, H)
    add(a + "kv_a_layernorm.weight", "BF16", [KVL])
    fp8(a + "kv_b_proj", HEADS * (NOPE + VD), KVL)
    fp8(a + "o_proj", H, HEADS * VD)
    fp8(a + "indexer.wq_b", IH * ID, QL)
    fp8(a + "indexer.wk", ID, H)
    add(a + "indexer.k_norm.weight", "BF16", [ID])
    add(a + "indexer.k_norm.bias", "BF16", [ID])
    add(a + "indexer.weights_proj.weight", "BF16", [IH, H])
    add(p + "post_attention_layernorm.weight", "BF16", [H])
    m = p + "mlp."
    if moe:
        add(m + "gate.weight", "BF16", [E, H])
        add(m + "gate.e_score_correction_bias", "F32", [E])
        for e in range(E):
            fp8(m + f"experts.{e}.gate_proj", MI, H)
            fp8(m + f"experts.{e}.up_proj", MI, H)
            fp8(m + f"experts.{e}.down_proj", H, MI)
        fp8(m + "shared_experts.gate_proj", MI, H)
        fp8(m + "shared_experts.up_proj", MI, H)
        fp8(m + "shared_experts.down_proj", H, MI)
    else:
        fp8(m + "gate_proj", I, H)
        fp8(m + "up_proj", I, H)
        fp8(m + "down_proj", H, I)
    if mtp:
        add(p + "shared_head.norm.weight", "BF16", [H])
        add(p + "shared_head.head.weight", "BF16", [V, H])


add("model.embed_tokens.weight", "BF16", [V, H])
layer(0, moe=False, mtp=False)
layer(1, moe=True, mtp=False)
layer(2, moe=True, mtp=True)
add("model.norm.weight", "BF16", [H])
add("lm_head.weight", "BF16", [V, H])
with open(__file__.replace(".py", ".txt"), "w") as out:
    out.write("\n".join(lines) + "\n")
