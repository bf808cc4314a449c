defmodule CouncilEx.Test.ModelRunTools do
  @moduledoc "Tool functions of the model run tests (they report to the test process)."

  def lookup(%{"query" => q}) do
    if pid = :persistent_term.get({__MODULE__, :test}, nil), do: send(pid, {:tool_ran, q, self()})
    "found " <> q
  end

  def fails(_args), do: raise("no luck")
end

defmodule CouncilEx.ModelRunTest do
  # Runs of model members end to end against a local fake model server
  # (build/release/test/helpers/fake_llm, which speaks the OpenAI,
  # Anthropic and Gemini APIs): the C node the library manages calls it.
  # Checks tokens and tool events through subscribe, usage in the results,
  # an Elixir function tool's round trip, API keys from the node's
  # environment ({:system, VAR}) and from a literal key in the
  # configuration (given to the node under a generated variable, never
  # shown), and the C node's agreement on the model field.
  use ExUnit.Case, async: false
  @moduletag :cnode
  @moduletag timeout: 300_000

  import CouncilEx.Test.Helpers
  alias CouncilEx.Spec
  alias CouncilEx.Test.Backend
  alias CouncilEx.Test.ModelRunTools

  @fake Enum.find(
          [
            System.get_env("FAKE_LLM"),
            "build/release/test/helpers/fake_llm",
            "build/asan/test/helpers/fake_llm"
          ],
          &(&1 && File.exists?(&1))
        )
  if @fake == nil,
    do: @moduletag(skip: "build/release/test/helpers/fake_llm is not built (make)")

  @env_var "COUNCIL_EX_TEST_MODEL_KEY"
  @env_key "sk-env-5b1d0c"
  @literal_key "sk-literal-93ac7e"

  # The fake servers: one wants the key of the environment variable, the
  # other the literal key of the configuration. A node started before
  # this module could not see either, so the module starts a new one (with
  # the NIF: restarts the NIF's server, which hands the environment and the
  # literal key to the core).
  setup_all do
    System.put_env(@env_var, @env_key)
    Application.put_env(:council_ex, :providers, anthropic: [api_key: @literal_key])
    old = CouncilEx.Node.current()

    log =
      ExUnit.CaptureLog.capture_log(fn ->
        Backend.restart_backend()

        unless Backend.nif?(),
          do: eventually(fn -> (n = CouncilEx.Node.current()) && n != old end, 1_200, 50)
      end)

    env_url = start_fake(@env_key)
    literal_url = start_fake(@literal_key)

    on_exit(fn ->
      Application.delete_env(:council_ex, :providers)
      System.delete_env(@env_var)
    end)

    %{env_url: env_url, literal_url: literal_url, restart_log: log}
  end

  # A fake model server on a free port, requiring `key`, owned by the
  # setup_all process (it exits when its stdin, the port, closes).
  defp start_fake(key) do
    port =
      Port.open({:spawn_executable, @fake}, [
        :binary,
        {:line, 4096},
        args: ["--port", "0", "--require-key", key]
      ])

    receive do
      {^port, {:data, {:eol, "fake_llm ready port=" <> n}}} -> "http://127.0.0.1:" <> n
    after
      10_000 -> flunk("fake_llm did not start")
    end
  end

  defp requests(url) do
    {:ok, {{_, 200, _}, _, body}} =
      :httpc.request(:get, {String.to_charlist(url <> "/_requests"), []}, [], body_format: :binary)

    {:ok, list} = CouncilEx.JSON.decode(body)
    list
  end

  defp reset(url) do
    {:ok, {{_, 204, _}, _, _}} =
      :httpc.request(:post, {String.to_charlist(url <> "/_reset"), [], ~c"text/plain", ""}, [], [])

    :ok
  end

  setup %{env_url: env_url, literal_url: literal_url} do
    :inets.start()
    reset(env_url)
    reset(literal_url)
    :ok
  end

  defp new_spec(members, rounds \\ [[type: :independent_analysis]]),
    do: Spec.new!(id: "models", members: members, rounds: rounds)

  test "an openai member with its key from the node's environment: tokens, usage, result",
       %{env_url: url} do
    spec =
      new_spec([
        [
          id: :gpt,
          provider: :openai,
          model: "hello~#{System.unique_integer([:positive])}",
          base_url: url <> "/v1",
          api_key: {:system, @env_var}
        ]
      ])

    run_id = run_id("gpt")
    {:ok, _pid} = CouncilEx.start(spec, "What is 2+2?", run_id: run_id, subscribe: true)
    events = collect_events(run_id)
    assert {:run_completed, ^run_id, result} = List.last(events)

    tokens = for {:member_token, _, :independent_analysis, "gpt", chunk} <- events, do: chunk
    assert length(tokens) > 1
    assert result.final =~ "Hello from hello. You said:"
    assert IO.iodata_to_binary(tokens) == result.final

    assert %{usage: %{input_tokens: input, output_tokens: output, cost: nil}} = result
    assert input > 0 and output > 0
    [%{usage: round_usage, members: [member]}] = result.rounds
    assert round_usage == result.usage
    assert %{status: :ok, error_kind: nil, usage: ^round_usage} = member

    # the key went in the Authorization header (shown redacted by the fake)
    assert [req] = requests(url)
    assert req["path"] == "/v1/chat/completions"
    assert inspect(req["headers"]) =~ "redacted"
  end

  test "telemetry: a model member's stop and its provider request carry the tokens it used",
       %{env_url: url} do
    me = self()
    handler = "model-run-telemetry"

    :ok =
      :telemetry.attach_many(
        handler,
        [[:council_ex, :member, :stop], [:council_ex, :provider, :request, :stop]],
        fn event, m, md, _ -> send(me, {:telemetry, event, m, md}) end,
        nil
      )

    on_exit(fn -> :telemetry.detach(handler) end)
    CouncilEx.Telemetry.refresh()
    model = "hello~#{System.unique_integer([:positive])}"

    spec =
      new_spec([
        [
          id: :gpt,
          provider: :openai,
          model: model,
          base_url: url <> "/v1",
          api_key: {:system, @env_var}
        ]
      ])

    run_id = run_id("tele")
    {:ok, result} = CouncilEx.run(spec, "What is 2+2?", run_id: run_id)
    [%{members: [member]}] = result.rounds
    assert member.usage.input_tokens > 0 and member.usage.output_tokens > 0

    for event <- [[:council_ex, :member, :stop], [:council_ex, :provider, :request, :stop]] do
      assert_receive {:telemetry, ^event, m, %{run_id: ^run_id} = md}
      assert m.input_tokens == member.usage.input_tokens
      assert m.output_tokens == member.usage.output_tokens
      assert %{provider: :openai, model: ^model, member_id: "gpt", status: :ok, attempts: 1} = md
    end
  end

  test "an Elixir function tool: the model's call, the function, the answer; events for both",
       %{env_url: url} do
    :persistent_term.put({ModelRunTools, :test}, self())
    on_exit(fn -> :persistent_term.erase({ModelRunTools, :test}) end)

    defmodule ToolCouncil do
      use CouncilEx

      member :gpt,
        provider: :openai,
        model: "tools~tc",
        base_url: "http://127.0.0.1:1/v1",
        api_key: {:system, "COUNCIL_EX_TEST_MODEL_KEY"},
        tools: [
          %{
            name: "lookup",
            description: "Looks a term up",
            parameters: %{type: "object", properties: %{query: %{type: "string"}}},
            handler: &CouncilEx.Test.ModelRunTools.lookup/1
          },
          %{
            name: "fails",
            parameters: %{type: "object"},
            handler: &CouncilEx.Test.ModelRunTools.fails/1
          }
        ]

      round :independent_analysis
    end

    # the module's base_url points nowhere: this run's spec points at the fake
    spec = ToolCouncil.__council__()
    [gpt] = spec.members
    spec = %{spec | members: [%{gpt | options: Map.put(gpt.options, "base_url", url <> "/v1")}]}

    id = run_id("tools")
    assert {:ok, result} = CouncilEx.run(spec, "look it up", run_id: id)

    assert result.final ==
             "Tool results: found q1 | Error: no luck"

    assert_received {:tool_ran, "q1", fun_pid}
    refute Process.alive?(fun_pid)

    # and seen by a subscriber
    id2 = run_id("tools")
    {:ok, _pid} = CouncilEx.start(spec, "look it up", run_id: id2, subscribe: true)
    events = collect_events(id2)

    assert {:run_completed, ^id2, %{final: "Tool results: found q1 | Error: no luck"}} =
             List.last(events)

    requests = for {:tool_call_request, ^id2, :independent_analysis, "gpt", c} <- events, do: c
    results = for {:tool_call_result, ^id2, :independent_analysis, "gpt", r} <- events, do: r

    assert Enum.sort_by(requests, & &1.name) == [
             %{id: "call_2", name: "fails", arguments: ~s({"query":"q2"})},
             %{id: "call_1", name: "lookup", arguments: ~s({"query":"q1"})}
           ]

    assert Enum.sort_by(results, & &1.name) == [
             %{
               id: "call_2",
               name: "fails",
               arguments: ~s({"query":"q2"}),
               result: "no luck",
               status: :error
             },
             %{
               id: "call_1",
               name: "lookup",
               arguments: ~s({"query":"q1"}),
               result: "found q1",
               status: :ok
             }
           ]

    # each tool_call_result follows its request, inside the member's call
    names = Enum.map(events, &elem(&1, 0))
    started = Enum.find_index(names, &(&1 == :member_started))
    completed = Enum.find_index(names, &(&1 == :member_completed))

    for {tag, i} <- Enum.with_index(names),
        tag in [:tool_call_request, :tool_call_result],
        do: assert(i > started and i < completed)
  end

  test "a literal key in the configuration reaches the node, never a spec, log or state",
       %{literal_url: url, restart_log: restart_log} do
    spec =
      new_spec([
        [id: :claude, provider: :anthropic, model: "hello~lit", base_url: url, max_tokens: 64]
      ])

    log =
      ExUnit.CaptureLog.capture_log(fn ->
        assert {:ok, %{final: final, usage: %{input_tokens: n}}} = CouncilEx.run(spec, "hi")
        assert final =~ "Hello from hello."
        assert n > 0
      end)

    {:ok, checked} =
      CouncilEx.RunServer.check_spec(run_id: nil, council: "x", spec: spec, input: "q")

    json = Spec.to_json(checked[:spec])
    assert json =~ ~s("api_key_env":"COUNCIL_EX_KEY_ANTHROPIC")

    states =
      if Backend.nif?(),
        do: [inspect(:sys.get_state(CouncilEx.Nif.Server))],
        else: [inspect(:sys.get_state(CouncilEx.Node)), inspect(CouncilEx.Node.info())]

    for text <- [json, log, restart_log | states] do
      refute text =~ @literal_key
    end

    assert [%{"path" => "/v1/messages"}] = requests(url)
    # the generated variable is in the node's environment only (with the
    # NIF: in this OS process's, not in the VM's)
    assert System.get_env("COUNCIL_EX_KEY_ANTHROPIC") == nil
  end

  test "a wrong or missing key is a permanent member error, not retried", %{literal_url: url} do
    spec =
      Spec.new!(
        id: "models",
        members: [
          [
            id: :a,
            provider: :openai,
            model: "hello~w",
            base_url: url <> "/v1",
            api_key: {:system, @env_var}
          ],
          [
            id: :b,
            provider: :openai,
            model: "hello~n",
            api_key: {:system, "COUNCIL_EX_TEST_UNSET_VAR"}
          ]
        ],
        rounds: [[type: :independent_analysis]],
        limits: [max_attempts: 3]
      )

    assert {:error, {:failed, _errors, result}} = CouncilEx.run(spec, "hi")
    [%{members: [a, b]}] = result.rounds
    assert %{status: :error, error_kind: :permanent, attempts: 1} = a
    assert %CouncilEx.Error{kind: :permanent, member_id: "a"} = a.error
    assert a.error.message =~ "refused the key"
    refute CouncilEx.Error.retryable?(a.error)
    assert %{status: :error, error_kind: :permanent, attempts: 1} = b
    assert b.error.message =~ "COUNCIL_EX_TEST_UNSET_VAR"
    refute inspect(result) =~ @env_key
  end

  test "several providers in one council, with a vote", %{env_url: url} do
    members = [
      [
        id: :gpt,
        provider: :openai,
        model: "hello~a",
        base_url: url <> "/v1",
        api_key: {:system, @env_var}
      ],
      [
        id: :gem,
        provider: :gemini,
        model: "hello~b",
        base_url: url <> "/v1beta",
        api_key: {:system, @env_var}
      ],
      [
        id: :router,
        provider: :openrouter,
        model: "or-hello~c",
        base_url: url <> "/api/v1",
        api_key: {:system, @env_var}
      ],
      [
        id: :local,
        provider: :ollama,
        model: "hello~d",
        base_url: url <> "/v1",
        api_key: {:system, @env_var}
      ]
    ]

    spec = new_spec(members, [[type: :independent_analysis], [type: :vote]])
    assert {:ok, result} = CouncilEx.run(spec, "Pick one")
    [analysis, vote] = result.rounds
    assert Enum.all?(analysis.members, &(&1.status == :ok and &1.usage.output_tokens > 0))
    assert vote.aggregate["valid_votes"] == 4
    # OpenRouter reports a cost; the others do not
    costs = Map.new(analysis.members, &{&1.member_id, &1.usage.cost})
    assert is_float(costs["router"]) and costs["gpt"] == nil
    assert is_float(result.usage.cost)
  end

  test "model field: the library and the C node refuse a model member without one alike" do
    spec = new_spec([[id: :a, provider: :mock], [id: :b, provider: :gemini]])

    assert {:error, {:invalid_council, [%{path: "members[1].options.model"}]}} =
             CouncilEx.start(spec, "q")

    assert {:error, {:invalid_spec, "members[1].options.model", _}} =
             CouncilEx.Backend.start(:start, %{spec: Spec.to_json(spec), input: "q", run_id: nil})

    # a tool with a function handler and no name: the same path on both sides
    bad = %{
      "id" => "x",
      "members" => [
        %{
          "id" => "a",
          "provider" => "openai",
          "options" => %{"model" => "m", "tools" => [%{"handler" => "beam"}]}
        }
      ],
      "rounds" => [%{"type" => "vote"}]
    }

    assert {:error, {:invalid_spec, "members[0].options.tools[0].name", _}} =
             CouncilEx.Backend.start(:start, %{
               spec: CouncilEx.JSON.encode!(bad),
               input: "q",
               run_id: nil
             })

    assert {:error, message} =
             Spec.new(
               id: "x",
               members: [
                 [
                   id: :a,
                   provider: :openai,
                   model: "m",
                   tools: [%{handler: &ModelRunTools.fails/1}]
                 ]
               ],
               rounds: [[type: :vote]]
             )

    assert message =~ "name is required"
  end
end
