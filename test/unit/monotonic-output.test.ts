import { expect } from 'chai';
import { MonotonicOutput } from '../../server/primary/monotonic-output.js';
import type { MetricsJson } from '../../server/metrics/worker-metrics.js';

/** A one-histogram exposition whose _sum is `sum`, plus a gauge that may go down. */
function exposition(sum: number, gauge: number): MetricsJson {
  return [
    {
      name: 'fts_operation_duration_seconds',
      help: 'h',
      type: 'histogram',
      aggregator: 'sum',
      values: [
        { value: 3, metricName: 'fts_operation_duration_seconds_count', labels: { op: 'upload' } },
        { value: sum, metricName: 'fts_operation_duration_seconds_sum', labels: { op: 'upload' } },
      ],
    },
    { name: 'fts_sessions_active', help: 'g', type: 'gauge', aggregator: 'sum', values: [{ value: gauge, labels: {} }] },
  ] as unknown as MetricsJson;
}

function values(m: MetricsJson): number[] {
  return m.flatMap((metric) => metric.values.map((v) => v.value));
}

describe('MonotonicOutput (metrics endpoint)', () => {
  it('a histogram _sum re-summed in another order (1e-16 lower) is exposed at its highest value; gauges may fall', () => {
    const out = new MonotonicOutput();
    expect(values(out.apply(exposition(9.2, 5)))).to.deep.equal([3, 9.2, 5]);
    expect(values(out.apply(exposition(9.199999999999998, 1))), 'the float dip is hidden, the gauge is not').to.deep.equal([3, 9.2, 1]);
    expect(values(out.apply(exposition(9.7, 0))), 'and it grows again').to.deep.equal([3, 9.7, 0]);
  });
});
