# Seeds for the request-handler fuzzers (scripts/fuzz): writes
#   test/fuzz/corpus_service/<name>  one request term each (ETF without the
#                                    131), as fuzz_service.c takes it
#   test/fuzz/corpus_spec/<name>     one JSON spec each (fuzz_spec.c)
# Run from the project root: elixir test/fuzz/service_seeds.exs
# Pids are of the fuzzer's node ("fuzz@localhost", creation 0): numbers 1..3
# are its service, its sink and the first run.

defmodule Seeds do
  def pid(num) do
    name = "fuzz@localhost"
    :erlang.binary_to_term(<<131, 88, 119, byte_size(name), name::binary, num::32, 0::32, 0::32>>)
  end

  # A small JSON encoder for maps of atoms/binaries, lists, numbers.
  def json(m) when is_map(m),
    do: "{" <> Enum.map_join(m, ",", fn {k, v} -> json(to_string(k)) <> ":" <> json(v) end) <> "}"

  def json(l) when is_list(l), do: "[" <> Enum.map_join(l, ",", &json/1) <> "]"
  def json(b) when is_binary(b), do: inspect(b)
  def json(a) when is_atom(a) and a not in [nil, true, false], do: json(Atom.to_string(a))
  def json(nil), do: "null"
  def json(x), do: to_string(x)
end

mock = fn id, opts -> %{id: id, provider: "mock", options: opts} end

specs = %{
  "quick" => %{id: "q", members: [mock.("a", %{})], rounds: [%{type: "independent_analysis"}]},
  "full" => %{
    id: "full",
    members: [mock.("a", %{chunks: 3}), mock.("b", %{latency_ms: 5}), mock.("c", %{answer: "VOTE: A"})],
    rounds: [
      %{type: "independent_analysis"},
      %{type: "anonymized_peer_review"},
      %{type: "vote"},
      %{type: "ranking"},
      %{type: "synthesis", options: %{member: "b", instructions: "sum up"}},
      %{type: "iterate", options: %{max_iterations: 2, until: "consensus",
                                    rounds: [%{type: "debate"}, %{type: "vote"}]}}
    ],
    chair: "a",
    limits: %{max_attempts: 2, backoff_ms: 1, concurrency: 2, member_timeout_ms: 100}
  },
  "sub" => %{
    id: "s",
    members: [mock.("a", %{}),
              %{id: "c", provider: "council",
                options: %{spec: %{id: "inner", members: [mock.("x", %{})],
                                   rounds: [%{type: "independent_analysis"}]}}}],
    rounds: [%{type: "independent_analysis"}]
  },
  "exec" => %{id: "e", members: [%{id: "e", provider: "exec", options: %{argv: ["cat"], cwd: "/"}}],
              rounds: [%{type: "independent_analysis"}]},
  "tools" => %{id: "t", members: [%{id: "m", provider: "openai",
                                    options: %{model: "m", base_url: "http://127.0.0.1:9",
                                               tools: [%{name: "t", exec: ["cat"]},
                                                       %{name: "h", handler: "beam",
                                                         parameters: %{type: "object"}}]}}],
               rounds: [%{type: "independent_analysis"}]},
  "beam" => %{id: "b", members: [%{id: "b", provider: "beam", options: %{module: "Elixir.M"}}],
              rounds: [%{type: "independent_analysis"}]},
  "failing" => %{id: "f", members: [mock.("a", %{fail_attempts: [1, 2]}), mock.("b", %{hang_attempts: [1]})],
                 rounds: [%{type: "independent_analysis", options: %{failure_mode: "fail_fast"}}]}
}

reg = "CouncilEx.Runner.Registry"
sink = Seeds.pid(2)
run = Seeds.pid(3)
topic = "council_ex:run:r1"

starts =
  for {name, spec} <- specs, {form, s} <- [json: Seeds.json(spec), term: spec, tagged: {:json, Seeds.json(spec)}] do
    {"start_#{name}_#{form}", {:start, %{spec: s, input: "question"}}}
  end

requests =
  starts ++
    [
      {"start_all_opts",
       {:start, %{spec: Seeds.json(specs["quick"]), input: %{any: ["term", 1, 2.5]}, run_id: "r1",
                  council: "Elixir.C", registry: reg, user_opts: [a: 1],
                  subscribe: [sink, {sink, :tagged}], member_server: sink}}},
      {"start_link", {:start_link, %{spec: Seeds.json(specs["quick"]), input: "q", run_id: "r2"}}},
      {"start_bad_key", {:start, %{spec: "{}", input: "q", colour: :red}}},
      {"start_nil", {:start, %{spec: Seeds.json(specs["quick"]), input: "q", run_id: nil, council: nil}}},
      {"whereis", {:whereis, reg, "r1"}},
      {"state", {:state, reg, "r1"}},
      {"result", {:result, reg, "r1"}},
      {"cancel", {:cancel, reg, "r1"}},
      {"outcome_by_pid", {:outcome_by_pid, run}},
      {"subscribe", {:subscribe, topic, sink}},
      {"subscribe_tagged", {:subscribe, topic <> ":sub:c", sink, :tagged}},
      {"unsubscribe", {:unsubscribe, topic, sink}},
      {"stats", :stats},
      {"ping", :ping},
      {"unknown", {:bogus, [1, 2], %{k: "v"}}},
      # calls a run's process answers
      {"run_id", :run_id},
      {"run_state", :state},
      {"run_await", :await},
      {"run_result", :result},
      {"run_cancel", :cancel},
      {"run_subscribe", {:subscribe, sink}},
      {"run_unsubscribe", {:unsubscribe, sink}}
    ]

File.mkdir_p!("test/fuzz/corpus_service")
File.mkdir_p!("test/fuzz/corpus_spec")

for {name, req} <- requests do
  <<131, etf::binary>> = :erlang.term_to_binary(req)
  File.write!("test/fuzz/corpus_service/#{name}", etf)
end

for {name, spec} <- specs, do: File.write!("test/fuzz/corpus_spec/#{name}.json", Seeds.json(spec))
IO.puts("#{length(requests)} requests, #{map_size(specs)} specs")
