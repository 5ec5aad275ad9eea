"""The benchmark harness behind `bench/run.py`, in the order a run meets it:

- `system`: running commands (in a pod, pinned to a core), the processes' CPU time and memory
  from /proc, how busy each core was, and what machine this is.
- `mesh`: pods as network namespaces on a bridge, as in the test harness lab/ (ip netns, veth,
  a bridge), and the Service + EndpointSlice policy.
- `proxies`: the proxy kinds compared (Skiff, Nginx, Haproxy): configuration, start, readiness,
  and the pids whose CPU and memory count.
- `targets`: one way of reaching the upstream each: where the load generator runs, what it dials.
- `load`: one measurement of one figure on one target: oha (latency at fixed rates), h2load
  (maximum throughput), skiff-bench (TCP bulk, idle connections).
- `report` and `plots`: statistics, the markdown tables, the PNG plots.
"""
