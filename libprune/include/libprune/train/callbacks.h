#pragma once
// The Trainer's standard callbacks, one per file: pruning on a schedule, checkpoints (last and best),
// the JSON-lines metrics log, progress, the L1 penalty on batch-norm scales (network slimming), and
// quantization-aware training on a schedule.
#include "libprune/train/bn_l1_penalty.h"
#include "libprune/train/checkpoint_callback.h"
#include "libprune/train/metrics_log.h"
#include "libprune/train/plan_history.h"
#include "libprune/train/progress_callback.h"
#include "libprune/train/pruning_callback.h"
#include "libprune/train/qat_callback.h"
