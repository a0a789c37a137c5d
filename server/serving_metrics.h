// The metric families of `oclip serve`, registered once in a registry and
// shared by the service (per-RPC series) and the models (per-stage series).
//
//   oclip_requests_total{rpc,code}               finished calls by status code
//   oclip_request_duration_seconds{rpc}          call latency, accept to finish
//   oclip_stage_duration_seconds{model,stage}    per item: "preprocess" (decode +
//                                                resize, tokenize), "queue" (wait
//                                                for a batch); per batch: "model"
//   oclip_batch_size{model,kind}                 items per forward pass
//   oclip_items_total{model,kind}                items computed (rate = items/s)
//   oclip_items_dropped_total{model,reason}      items dropped unrun (deadline,
//                                                cancelled, failed: another item
//                                                of the call failed)
//   oclip_queue_depth{model}                     items waiting for a batch
//   oclip_model_ready{model}                     1 once loaded and warmed up
//
// Thread safety: the families are thread-safe (core/metrics.h).

#ifndef OCLIP_SERVER_SERVING_METRICS_H_
#define OCLIP_SERVER_SERVING_METRICS_H_

#include "core/metrics.h"

namespace oclip {

struct ServingMetrics {
  explicit ServingMetrics(MetricsRegistry& registry);

  CounterFamily* requests;
  HistogramFamily* request_duration;
  HistogramFamily* stage_duration;
  HistogramFamily* batch_size;
  CounterFamily* items;
  CounterFamily* items_dropped;
  GaugeFamily* queue_depth;
  GaugeFamily* model_ready;
};

}  // namespace oclip

#endif  // OCLIP_SERVER_SERVING_METRICS_H_
