#!/bin/sh
# make_bad_models.sh DITGEN WORK: exports the tiny FLUX.2 as a diffusers folder and derives broken
# copies of it, one defect each, for the bad-input tests.
set -e
ditgen="$1"; work="$2"
rm -rf "$work"; mkdir -p "$work"
"$ditgen" export-tiny flux2 "$work/good" --shards 3
variant() { rm -rf "$work/$1"; cp -r "$work/good" "$work/$1"; }
shard="transformer/diffusion_pytorch_model-00002-of-00003.safetensors"

variant truncated;   size=$(stat -c %s "$work/truncated/$shard"); truncate -s $((size - 100)) "$work/truncated/$shard"
variant corrupt;     printf 'garbage!' | dd of="$work/corrupt/$shard" bs=1 seek=0 conv=notrunc 2>/dev/null
variant badjson;     printf '{"weight_map": {' > "$work/badjson/transformer/diffusion_pytorch_model.safetensors.index.json"
variant noshard;     rm "$work/noshard/$shard"
variant missing;     sed -i 's/"num_layers": 2/"num_layers": 3/' "$work/missing/transformer/config.json"
variant unexpected;  sed -i 's/"num_single_layers": 2/"num_single_layers": 1/' "$work/unexpected/transformer/config.json"
variant misshaped;   sed -i 's/"joint_attention_dim": 96/"joint_attention_dim": 64/' "$work/misshaped/transformer/config.json"
variant novae;       rm -r "$work/novae/vae"
variant wrongclass;  sed -i 's/"Flux2Pipeline"/"QwenImagePipeline"/' "$work/wrongclass/model_index.json"
variant badtok;      printf '{"model": {"type": "Unigram"}}' > "$work/badtok/tokenizer/tokenizer.json"
echo "bad models ready in $work"
# Configs that used to be truncated or accepted silently, an index entry leaving the folder, and a NaN weight.
variant floatcount;  sed -i 's/"num_layers": 2/"num_layers": 2.5/' "$work/floatcount/transformer/config.json"
variant badtheta;    sed -i 's/"rope_theta": 2000/"rope_theta": 0/' "$work/badtheta/transformer/config.json"
variant notobject;   printf '[1, 2]' > "$work/notobject/transformer/config.json"
variant escape
sed -i 's/"diffusion_pytorch_model-00002-of-00003.safetensors"/"..\/..\/good\/transformer\/diffusion_pytorch_model-00002-of-00003.safetensors"/' \
  "$work/escape/transformer/diffusion_pytorch_model.safetensors.index.json"
# A NaN in the first float of a tensor's data: 0x7fc00000 little-endian at the data section's start.
variant nanweight
f="$work/nanweight/transformer/diffusion_pytorch_model-00001-of-00003.safetensors"
hlen=$(od -An -t u8 -N 8 "$f" | tr -d ' ')
printf '\000\000\300\177' | dd of="$f" bs=1 seek=$((8 + hlen)) conv=notrunc 2>/dev/null
