# Tests tagged :cnode need priv/council_node (or COUNCIL_NODE) and its
# council service; the library starts the node itself. Run only the rest
# with `mix test --exclude cnode`.
ExUnit.start(capture_log: true)
