#!/bin/sh
# make_bad_qwen_models.sh DITGEN WORK: exports the tiny Qwen-Image as a diffusers folder and derives broken
# copies of it, one defect each, for the bad-input tests.
set -e
ditgen="$1"; work="$2"
rm -rf "$work"; mkdir -p "$work"
"$ditgen" export-tiny qwen-image "$work/good" --shards 3
variant() { rm -rf "$work/$1"; cp -r "$work/good" "$work/$1"; }
shard="transformer/diffusion_pytorch_model-00002-of-00003.safetensors"

variant truncated; size=$(stat -c %s "$work/truncated/$shard"); truncate -s $((size - 100)) "$work/truncated/$shard"
# A shard whose header gives img_in.weight a transposed shape (same byte count, same header length).
variant misshaped
f=$(grep -l '"img_in.weight"' "$work"/misshaped/transformer/*.safetensors)
sed -i 's/"img_in.weight":{"data_offsets":\[\([0-9]*\),\([0-9]*\)\],"dtype":"F32","shape":\[128,16\]}/"img_in.weight":{"data_offsets":[\1,\2],"dtype":"F32","shape":[16,128]}/' "$f"
grep -q '"shape":\[16,128\]' "$f"
variant missing;  sed -i 's/"num_layers": 2/"num_layers": 3/' "$work/missing/transformer/config.json"
variant tewidth;  sed -i 's/"joint_attention_dim": 32/"joint_attention_dim": 48/' "$work/tewidth/transformer/config.json"
variant variant;  sed -i 's/"num_layers": 2/"num_layers": 2, "zero_cond_t": true/' "$work/variant/transformer/config.json"
echo "bad Qwen-Image models ready in $work"
