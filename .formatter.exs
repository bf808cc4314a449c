# mix format: the Elixir library, its tests and examples (test/cnode/ is the
# C node's own suite and keeps its own style).
[
  inputs: [
    "{mix,.formatter}.exs",
    "lib/**/*.{ex,exs}",
    "test/council_ex/**/*.{ex,exs}",
    "test/support/**/*.{ex,exs}",
    "examples/**/*.exs"
  ],
  locals_without_parens: [member: 1, member: 2, round: 1, round: 2, round: 3, chair: 1, limits: 1],
  export: [
    locals_without_parens: [member: 1, member: 2, round: 1, round: 2, round: 3, chair: 1, limits: 1]
  ],
  line_length: 100
]
