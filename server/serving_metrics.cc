#include "server/serving_metrics.h"

namespace oclip {

ServingMetrics::ServingMetrics(MetricsRegistry& registry)
    : requests(registry.AddCounter("oclip_requests_total", "Finished calls by RPC and status code.",
                                   {"rpc", "code"})),
      request_duration(registry.AddHistogram(
          "oclip_request_duration_seconds", "Call latency from accept to finish.", {"rpc"},
          ExponentialBuckets(0.0005, 2, 18))),
      stage_duration(registry.AddHistogram(
          "oclip_stage_duration_seconds",
          "Time per stage: preprocess and queue per item, model per batch.", {"model", "stage"},
          ExponentialBuckets(0.0001, 2, 20))),
      batch_size(registry.AddHistogram("oclip_batch_size", "Items per forward pass.",
                                       {"model", "kind"}, ExponentialBuckets(1, 2, 11))),
      items(registry.AddCounter("oclip_items_total", "Items computed.", {"model", "kind"})),
      items_dropped(registry.AddCounter("oclip_items_dropped_total",
                                        "Items dropped before they ran.", {"model", "reason"})),
      queue_depth(registry.AddGauge("oclip_queue_depth", "Items waiting for a batch.", {"model"})),
      model_ready(registry.AddGauge("oclip_model_ready", "1 once the model is loaded and warm.",
                                    {"model"})) {}

}  // namespace oclip
