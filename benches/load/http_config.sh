# Sourced by the HTTP/1.1 load harnesses: the gateway config they run, one HTTP listener
# routing everything to the upstream at $UP.
gateway_config() { # $1 = extract list, $2 = inject list, $3 = on_missing
  cat <<TOML
[admin]
listen = ""
[telemetry]
sampler = { kind = "parent_ratio", ratio = 1.0 }
[propagation]
extract = [$1]
inject = [$2]
on_missing = "$3"
[[listeners]]
name = "edge"
protocol = "http"
address = "127.0.0.1:0"
[[routes]]
listener = "edge"
match = { path_prefix = "/" }
upstream = "up"
[[upstreams]]
name = "up"
protocol = "http"
endpoints = ["$UP"]
pool_idle_per_endpoint = 256
TOML
}
