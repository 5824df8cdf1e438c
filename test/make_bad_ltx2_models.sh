#!/bin/sh
# make_bad_ltx2_models.sh DITGEN WORK: exports the tiny LTX-2 as a diffusers folder and derives broken
# copies of it, one defect each, for the bad-input tests.
set -e
ditgen="$1"; work="$2"
rm -rf "$work"; mkdir -p "$work"
"$ditgen" export-tiny ltx2 "$work/good" --shards 3
variant() { rm -rf "$work/$1"; cp -r "$work/good" "$work/$1"; }

variant truncated_audio_vae
f="$work/truncated_audio_vae/audio_vae/diffusion_pytorch_model.safetensors"
size=$(stat -c %s "$f"); truncate -s $((size - 100)) "$f"
# The video VAE's first conv with its in/out channels swapped in the header (same bytes, same length).
variant misshaped_vae
f="$work/misshaped_vae/vae/diffusion_pytorch_model.safetensors"
sed -i 's/"decoder.conv_in.conv.weight":{"data_offsets":\[\([0-9]*\),\([0-9]*\)\],"dtype":"F32","shape":\[16,8,3,3,3\]}/"decoder.conv_in.conv.weight":{"data_offsets":[\1,\2],"dtype":"F32","shape":[8,16,3,3,3]}/' "$f"
grep -q '"shape":\[8,16,3,3,3\]' "$f"
variant novocoder; rm -rf "$work/novocoder/vocoder"
# A vocoder whose upsampling does not make the audio VAE's mel rate into its output rate.
variant vocoder_rate; sed -i 's/"output_sampling_rate": 16000/"output_sampling_rate": 24000/' "$work/vocoder_rate/vocoder/config.json"
grep -q '"output_sampling_rate": 24000' "$work/vocoder_rate/vocoder/config.json"
echo "bad LTX-2 models ready in $work"
