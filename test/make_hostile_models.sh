#!/bin/sh
# make_hostile_models.sh DITGEN DITGEN_FUZZ WORK: the probe's hostile inputs (issue 22) as model folders:
# tiny FLUX.2 and Qwen-Image exports with one defect each, and the reproducer files of `ditgen_fuzz write`.
set -e
ditgen="$1"; fuzz="$2"; work="$3"
rm -rf "$work"; mkdir -p "$work"
"$ditgen" export-tiny flux2 "$work/good" --shards 3
"$ditgen" export-tiny qwen-image "$work/qgood" --shards 2
"$fuzz" write "$work/files"
variant() { rm -rf "$work/$1"; cp -r "$work/good" "$work/$1"; }
qvariant() { rm -rf "$work/$1"; cp -r "$work/qgood" "$work/$1"; }
shard="transformer/diffusion_pytorch_model-00002-of-00003.safetensors"
presets() { printf '%s' "$2" > "$work/$1/ditgen_presets.json"; }

# Safetensors headers: 70,000 levels deep, 100,000 zero-size entries, a float tensor relabelled I32.
variant deepshard; cp "$work/files/deep.safetensors" "$work/deepshard/$shard"
variant wideshard; cp "$work/files/wide.safetensors" "$work/wideshard/$shard"
variant relabel;   sed -i '0,/"dtype":"F32"/s//"dtype":"I32"/' "$work/relabel/$shard"
grep -q '"dtype":"I32"' "$work/relabel/$shard"
# Presets: 200,000 levels deep, wrong types, non-integers, out-of-range values.
variant deeppresets; cp "$work/files/deep_presets.json" "$work/deeppresets/ditgen_presets.json"
variant presets_type;  presets presets_type '{"defaults": {"steps": "many"}}'
variant presets_float; presets presets_float '{"defaults": {"steps": 2.5}}'
variant presets_huge;  presets presets_huge '{"defaults": {"steps": 1000000000}}'
variant presets_guidance; presets presets_guidance '{"defaults": {"guidance": -1}}'
variant presets_dup;   presets presets_dup '{"defaults": {"steps": 2, "steps": 3}}'
qvariant qpresets_cfg; presets qpresets_cfg '{"defaults": {"true_cfg_scale": -4}}'
# Repeated keys in an index and in model_index.json.
variant dupindex
awk '{print} /"weight_map"/ {getline; print; print}' "$work/good/transformer/diffusion_pytorch_model.safetensors.index.json" \
  > "$work/dupindex/transformer/diffusion_pytorch_model.safetensors.index.json"
variant dupmodelindex; sed -i '0,/{/s//{"_class_name": "Flux2Pipeline",/' "$work/dupmodelindex/model_index.json"
# Configs whose numbers make no sense.
qvariant te_maxpos; sed -i 's/"max_position_embeddings": [0-9]*/"max_position_embeddings": 1/' "$work/te_maxpos/text_encoder/config.json"
qvariant te_family; sed -i 's/"model_type": "qwen2_5_vl"/"model_type": "gemma3"/' "$work/te_family/text_encoder/config.json"
qvariant sched_base; sed -i 's/"base_image_seq_len": [0-9]*/"base_image_seq_len": 0/' "$work/sched_base/scheduler/scheduler_config.json"
qvariant sched_equal; sed -i 's/"max_image_seq_len": [0-9]*/"max_image_seq_len": 256/; s/"base_image_seq_len": [0-9]*/"base_image_seq_len": 256/' \
  "$work/sched_equal/scheduler/scheduler_config.json"
qvariant sched_train; sed -i 's/"num_train_timesteps": [0-9]*/"num_train_timesteps": 0/' "$work/sched_train/scheduler/scheduler_config.json"
# FLUX.2 reads two scheduler fields but checks the whole file as every flow-matching config.
rm -rf "$work/fsched_train"; cp -r "$work/good" "$work/fsched_train"
sed -i 's/"num_train_timesteps": [0-9]*/"num_train_timesteps": 0/' "$work/fsched_train/scheduler/scheduler_config.json"
for f in te_maxpos/text_encoder/config.json te_family/text_encoder/config.json sched_base/scheduler/scheduler_config.json \
         sched_train/scheduler/scheduler_config.json; do
  if cmp -s "$work/$f" "$work/qgood/${f#*/}"; then echo "make_hostile_models: $f unchanged"; exit 1; fi
done
if cmp -s "$work/fsched_train/scheduler/scheduler_config.json" "$work/good/scheduler/scheduler_config.json"; then
  echo "make_hostile_models: fsched_train unchanged"; exit 1
fi
# A case folder whose io.safetensors is the deep header (ditgen verify).
mkdir -p "$work/cases/flux2_vae_b1_6x8"; cp "$work/files/deep.safetensors" "$work/cases/flux2_vae_b1_6x8/io.safetensors"
echo "hostile models ready in $work"
# Prompt files: values past the command line's limits, a repeated key, a line that is not UTF-8, and
# outputs that coincide once their paths are normalised or that land on an input or the summary.
pf="$work/pf"; mkdir -p "$pf/o"
printf '{"prompt": "a", "steps": 100000}\n' > "$pf/steps.jsonl"
printf '{"prompt": "a"}\n{"prompt": "b", "height": 16388}\n' > "$pf/height.jsonl"
printf '{"prompt": "a", "seed": 1, "seed": 2}\n' > "$pf/dupkey.jsonl"
printf 'a fox\ncaf\351 au lait\n' > "$pf/latin1.txt"
printf '{"output": "%s/o/a.png"}\n{"output": "%s/o/./a.png"}\n' "$pf" "$pf" > "$pf/dot.jsonl"
printf '{"output": "%s/o/a.png"}\n{"output": "%s/o//a.png"}\n' "$pf" "$pf" > "$pf/slashes.jsonl"
printf '{"output": "%s/o/sub/../a.png"}\n{"output": "%s/o/a.png"}\n' "$pf" "$pf" > "$pf/dotdot.jsonl"
ln -s "$pf/o" "$pf/olink"
printf '{"output": "%s/o/a.png"}\n{"output": "%s/olink/a.png"}\n' "$pf" "$pf" > "$pf/symlink.jsonl"
printf '{"output": "%s/items.png"}\n' "$pf" > "$pf/items.json"
printf '{"prompt": "a"}\n{"output": "%s/o/summary.summary.png"}\n' "$pf" > "$pf/summary.jsonl"
printf '{"prompt": "a"}\n{"output": "%s/o/flux2-tiny.128x128.C0.0001.png"}\n' "$pf" > "$pf/autoname.jsonl"
echo "hostile prompt files ready in $pf"
