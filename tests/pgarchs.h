/* pgarchs.h: arch.json texts that several test programs build their models from alike. */
#ifndef PGARCHS_H
#define PGARCHS_H

/* Every arch feature in a tiny model (test_model.c, test_engine.c). */
#define PGARCH_FULL_TINY \
  "{\"vocab_size\": 41, \"dim\": 24, \"heads\": 4, \"kv_heads\": 2, \"head_dim\": 6, " \
  "\"layers\": 5, \"block\": {\"ln_scale\": \"physical\"}, " \
  "\"attention\": {\"rope_dims\": 4, \"xsa_layers\": [1, 3], \"gate\": \"sparse_sigmoid\", " \
  "\"gate_scale\": 0.5, \"doc_mask\": true, \"doc_max_len\": 6}, " \
  "\"mlp\": {\"hidden\": 40, \"act\": \"leaky_relu2\"}, " \
  "\"embeddings\": {\"bigram_buckets\": 17, \"bigram_dim\": 8, \"ve_layers\": [2], " \
  "\"ve_dim\": 5, \"smear\": \"v2\", \"smear_bos_mask\": true, \"smear_window\": 6}, " \
  "\"structure\": {\"skips\": \"gated\", \"encoder\": [0, 1, 2, 1], " \
  "\"decoder\": [2, 1, 2, 3, 4], " \
  "\"parallel\": \"two_lane\", \"parallel_start\": 3, \"readout_groups\": 4, " \
  "\"readout_layer\": 2}}"

/* Every arch feature at the GPU tests' size, with a softcap (test_gpu_engine.c,
 * test_gpu_engine_bwd.c). */
#define PGARCH_FULL_GPU \
  "{\"vocab_size\": 301, \"dim\": 48, \"heads\": 4, \"kv_heads\": 2, \"head_dim\": 12, " \
  "\"layers\": 5, \"block\": {\"ln_scale\": \"physical\"}, " \
  "\"attention\": {\"rope_dims\": 8, \"xsa_layers\": [1, 3], \"gate\": \"sparse_sigmoid\", " \
  "\"gate_scale\": 0.5, \"doc_mask\": true, \"doc_max_len\": 12}, " \
  "\"mlp\": {\"hidden\": 96, \"act\": \"leaky_relu2\"}, " \
  "\"embeddings\": {\"bigram_buckets\": 37, \"bigram_dim\": 16, \"ve_layers\": [2], " \
  "\"ve_dim\": 10, \"smear\": \"v2\", \"smear_bos_mask\": true, \"smear_window\": 6}, " \
  "\"structure\": {\"skips\": \"gated\", \"encoder\": [0, 1, 2, 1], " \
  "\"decoder\": [2, 1, 2, 3, 4], " \
  "\"parallel\": \"two_lane\", \"parallel_start\": 3, \"readout_groups\": 4, " \
  "\"readout_layer\": 2}, \"head\": {\"softcap\": 30.0}}"

#endif
