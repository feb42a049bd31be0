#pragma once
// Everything public in one include.
#include "libprune/data/mnist.h"
#include "libprune/graph/trace.h"
#include "libprune/io/state_dict.h"
#include "libprune/models/mobilenet_v2.h"
#include "libprune/models/registry.h"
#include "libprune/models/resnet.h"
#include "libprune/models/vgg.h"
#include "libprune/nn/hook.h"
#include "libprune/nn/memory_format.h"
#include "libprune/report/count_ops.h"
#include "libprune/report/latency.h"
#include "libprune/version.h"
