import type { MetricsJson } from '../metrics/worker-metrics.js';

/**
 * Keeps every counter and histogram sample the endpoint exposes from ever going down between scrapes.
 *
 * The totals are sums over live workers, workers that exited, and the running total they are folded into,
 * and that set changes as workers come and go. Float addition is not associative, so re-summing the same
 * durations in another order can come out 1e-16 lower, and Prometheus reads any decrease as a counter reset
 * (a jump of the whole total in rate()). Integer counts are exact; this guards the `_sum` of histograms
 * (and anything else that is a float), by exposing the highest value seen so far for each series.
 */
export class MonotonicOutput {
  private readonly highest = new Map<string, number>();

  /** Raises, in place, each fts_ counter or histogram sample below the highest already exposed. */
  apply(metrics: MetricsJson): MetricsJson {
    for (const metric of metrics) {
      const type: unknown = metric.type; // an enum in prom-client's types, a plain string at run time
      if (!metric.name.startsWith('fts_') || (type !== 'counter' && type !== 'histogram')) continue;
      for (const sample of metric.values) {
        // Histogram samples carry their own name (_bucket, _sum, _count); prom-client's type omits it.
        const name = (sample as { metricName?: string }).metricName ?? metric.name;
        const key = seriesKey(name, sample.labels);
        const before = this.highest.get(key);
        if (before !== undefined && sample.value < before) sample.value = before;
        else this.highest.set(key, sample.value);
      }
    }
    return metrics;
  }
}

function seriesKey(name: string, labels: Record<string, string | number | undefined> = {}): string {
  const parts = Object.keys(labels)
    .sort()
    .map((k) => `${k}=${JSON.stringify(labels[k])}`);
  return `${name}{${parts.join(',')}}`;
}
