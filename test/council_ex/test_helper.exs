# Tests tagged :cnode need priv/council_node (or COUNCIL_NODE) and its
# council service; the library starts the node itself. Run only the rest
# with `mix test --exclude cnode`.
# A bare assert_receive waits up to 10 s (ExUnit's default, 100 ms, is too
# short for a loaded machine running the ASan build of the C node); it
# returns as soon as the message is there.
ExUnit.start(capture_log: true, assert_receive_timeout: 10_000)
