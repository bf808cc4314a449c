defmodule CouncilEx.Test.ModelTools do
  @moduledoc "Tool functions for the model provider tests."

  def lookup(%{"query" => q}), do: "found " <> q
  def as_map(args), do: %{echo: args["query"], n: 1}
  def ok_tuple(args), do: {:ok, %{got: args["query"]}}
  def error_tuple(_args), do: {:error, :not_found}
  def raises(_args), do: raise(ArgumentError, "kaput")
  def throws(_args), do: throw(:ball)
  def exits(_args), do: exit(:gone)
  def no_json(_args), do: {:a, self()}
  def sleeps(_args), do: Process.sleep(:infinity)
end

defmodule CouncilEx.Test.ModelCouncil do
  @moduledoc "Model members of each provider, with keys from the environment and a tool."
  use CouncilEx

  member :gpt,
    provider: :openai,
    model: "gpt-4o-mini",
    api_key: {:system, "MY_OPENAI_KEY"},
    temperature: 0.2,
    tools: [
      %{
        name: "lookup",
        description: "Looks a term up",
        parameters: %{type: "object", properties: %{query: %{type: "string"}}},
        handler: &CouncilEx.Test.ModelTools.lookup/1
      },
      [name: "grep", exec: ["grep", "-c", "x"]]
    ]

  member :claude, provider: :anthropic, model: "claude-3-5-haiku", max_tokens: 200
  member :gem, provider: :gemini, model: "gemini-2.0-flash"
  member :router, provider: :openrouter, model: "openai/gpt-4o"
  member :local, provider: :ollama, model: "llama3", base_url: "http://127.0.0.1:11434/v1"
  round :independent_analysis
  round :vote
  chair :gpt
end

defmodule CouncilEx.ModelProvidersTest do
  # The model providers on the Elixir side, without a model server: the
  # DSL and specs, the JSON sent to the C node, API keys (environment,
  # configuration, literal keys refused), configuration defaults, Elixir
  # function tools (sent as handler "beam", run by MemberServer.run_tool/3)
  # and the tool events' translation.
  use ExUnit.Case, async: false

  alias CouncilEx.{DynamicCouncil, MemberServer, Providers, Spec, Wire}
  alias CouncilEx.Test.{ModelCouncil, ModelTools}

  defp json_members(spec),
    do: spec |> Spec.to_json() |> CouncilEx.JSON.decode() |> elem(1) |> Map.fetch!("members")

  defp one(member, rounds \\ [[type: :independent_analysis]]),
    do: Spec.new(id: "one", members: [member], rounds: rounds)

  describe "DSL and spec" do
    test "each model provider is accepted and sent under its JSON name" do
      spec = ModelCouncil.__council__()

      assert Enum.map(spec.members, & &1.provider) ==
               [:openai, :anthropic, :gemini, :openrouter, :ollama]

      assert Enum.map(json_members(spec), & &1["provider"]) ==
               ["openai", "anthropic", "gemini", "openrouter", "ollama"]

      assert Spec.model_providers() -- Spec.providers() == []
    end

    test "api_key: {:system, VAR} is sent as api_key_env, other keys as options" do
      [gpt | _] = json_members(ModelCouncil.__council__())

      assert %{
               "model" => "gpt-4o-mini",
               "api_key_env" => "MY_OPENAI_KEY",
               "temperature" => 0.2
             } = gpt["options"]

      refute Map.has_key?(gpt["options"], "api_key")
      assert Spec.to_json(ModelCouncil.__council__()) =~ ~s("api_key_env":"MY_OPENAI_KEY")
    end

    test "a function tool is sent with handler \"beam\", its function kept apart; exec tools pass" do
      spec = ModelCouncil.__council__()
      [gpt | _] = json_members(spec)

      assert [
               %{
                 "name" => "lookup",
                 "description" => "Looks a term up",
                 "handler" => "beam",
                 "parameters" => %{
                   "type" => "object",
                   "properties" => %{"query" => %{"type" => "string"}}
                 }
               },
               %{"name" => "grep", "exec" => ["grep", "-c", "x"]}
             ] = gpt["options"]["tools"]

      assert Spec.beam_tools(spec) == %{"gpt" => %{"lookup" => &ModelTools.lookup/1}}

      assert MemberServer.tools_of(spec) ==
               %{{"gpt", "lookup"} => {&ModelTools.lookup/1, 30_000}}

      # the struct goes through check/validate with its functions
      assert {:ok, ^spec} = Spec.check(spec)
      assert {:ok, ^spec} = Spec.validate(spec)
    end

    test "DSL, maps and JSON give equal specs (a JSON tool names its handler)" do
      dsl = ModelCouncil.__council__()
      [gpt | rest] = dsl.members

      attrs = %{
        id: dsl.id,
        members:
          [
            %{
              id: "gpt",
              provider: "openai",
              options: %{
                "model" => "gpt-4o-mini",
                "api_key" => {:system, "MY_OPENAI_KEY"},
                "temperature" => 0.2,
                "tools" => [
                  %{
                    "name" => "lookup",
                    "description" => "Looks a term up",
                    "parameters" => %{
                      "type" => "object",
                      "properties" => %{"query" => %{"type" => "string"}}
                    },
                    "handler" => &ModelTools.lookup/1
                  },
                  %{"name" => "grep", "exec" => ["grep", "-c", "x"]}
                ]
              }
            }
          ] ++ Enum.map(rest, &Map.take(&1, [:id, :provider, :options])),
        rounds: [[type: :independent_analysis], [type: :vote]],
        chair: :gpt
      }

      assert {:ok, from_map} = Spec.new(attrs)
      assert from_map == dsl

      # JSON can only name a handler: the same spec minus the function
      assert {:ok, from_json} = DynamicCouncil.to_spec(Spec.to_json(dsl))
      assert %{from_json | id: dsl.id} == %{dsl | members: [%{gpt | tools: %{}} | rest]}
    end

    test "a literal key in member options is refused, with the C node's field" do
      for key <- ["sk-live-123", "key-9f8e7d"] do
        assert {:error, message} = one(id: :gpt, provider: :openai, model: "m", api_key: key)
        assert message =~ "literal API key"
        assert message =~ "{:system,"
        refute message =~ key

        assert_raise ArgumentError, ~r/literal API key/, fn ->
          Spec.new!(
            id: "one",
            members: [[id: :gpt, provider: :openai, api_key: key]],
            rounds: [[type: :vote]]
          )
        end
      end

      assert {:error, message} =
               DynamicCouncil.to_spec(
                 ~s({"members": [{"id": "a", "provider": "gemini",
                 "options": {"model": "g", "api_key": "AIza-secret"}}], "rounds": [{"type": "vote"}]})
               )

      assert message =~ "literal API key"
      refute message =~ "AIza-secret"

      # a hand-built struct: check/1 names the field as the C node does
      {:ok, spec} = one(id: :gpt, provider: :openai, model: "m")
      [m] = spec.members
      bad = %{spec | members: [%{m | options: Map.put(m.options, "api_key", "sk-1")}]}

      assert {:error, {:invalid_spec, "members[0].options.api_key", what}} = Spec.check(bad)
      refute what =~ "sk-1"

      assert_raise CompileError, ~r/members?.*literal API key/s, fn ->
        Code.compile_string("""
        defmodule CouncilEx.ModelProvidersTest.LiteralKey do
          use CouncilEx
          member :gpt, provider: :openai, model: "m", api_key: "sk-compiled"
          round :independent_analysis
        end
        """)
      end
    end

    test "bad api_key shapes and a key given twice are refused" do
      assert {:error, m1} = one(id: :a, provider: :anthropic, model: "c", api_key: {:system, ""})
      assert m1 =~ "api_key: must be {:system"

      assert {:error, m2} = one(id: :a, provider: :anthropic, model: "c", api_key: 42)
      assert m2 =~ "api_key: must be {:system"

      assert {:error, m3} =
               one(id: :a, provider: :anthropic, api_key: {:system, "A"}, api_key_env: "B")

      assert m3 =~ "not both"

      assert {:ok, spec} =
               one(id: :a, provider: :anthropic, api_key: {:system, "A"}, api_key_env: "A")

      assert hd(spec.members).options == %{"api_key_env" => "A"}
      # providers that are not model providers keep their options as given
      assert {:ok, mock} = one(id: :m, provider: :mock, api_key: "not-a-key")
      assert hd(mock.members).options == %{"api_key" => "not-a-key"}
    end

    test "a bad function tool is refused at the C node's path" do
      tool = %{name: "t", handler: fn _a, _b -> :ok end}

      {:ok, spec} = one(id: :gpt, provider: :openai, model: "m")
      [m] = spec.members

      for {t, field} <- [
            {tool, "members[0].options.tools[0].handler"},
            {%{handler: &ModelTools.lookup/1}, "members[0].options.tools[0].name"}
          ] do
        assert {:error, message} = one(id: :gpt, provider: :openai, model: "m", tools: [t])
        assert message =~ "tools"
        bad = %{spec | members: [%{m | options: Map.put(m.options, "tools", [t])}]}
        assert {:error, {:invalid_spec, ^field, _}} = Spec.check(bad)
      end
    end

    test "an anonymous function tool works in a spec, not in a compiled council" do
      fun = fn args -> args end

      assert {:ok, spec} =
               one(id: :gpt, provider: :openai, model: "m", tools: [%{name: "id", handler: fun}])

      assert Spec.beam_tools(spec) == %{"gpt" => %{"id" => fun}}

      assert_raise CompileError, ~r/remote function capture/, fn ->
        Code.compile_string("""
        defmodule CouncilEx.ModelProvidersTest.AnonTool do
          use CouncilEx
          member :gpt, provider: :openai, model: "m", tools: [%{name: "t", handler: fn a -> a end}]
          round :independent_analysis
        end
        """)
      end
    end

    test "function tools inside a sub-council are refused" do
      sub = [
        id: "sub",
        members: [
          [
            id: :gpt,
            provider: :openai,
            model: "m",
            tools: [%{name: "t", handler: &ModelTools.lookup/1}]
          ]
        ],
        rounds: [[type: :independent_analysis]]
      ]

      assert {:error, message} = one(id: :p, provider: :council, spec: sub)
      assert message =~ "Elixir function handlers"

      # a handler by name is fine there
      named =
        put_in(sub, [:members], [
          [id: :gpt, provider: :openai, model: "m", tools: [%{name: "t", handler: "t"}]]
        ])

      assert {:ok, _} = one(id: :p, provider: :council, spec: named)
    end

    test "the model is checked when a run starts, where configuration may give it" do
      {:ok, spec} = one(id: :c, provider: :anthropic)
      assert {:ok, _} = Spec.check(spec)

      assert {:error, {:invalid_spec, "members[0].options.model", "is required" <> _}} =
               Providers.resolve(spec, config: [], external: false)

      assert {:ok, resolved} =
               Providers.resolve(spec, config: [anthropic: [model: "claude"]], external: false)

      assert hd(resolved.members).options == %{"model" => "claude"}

      assert {:error, {:invalid_council, [%{path: "members[0].options.model"}]}} =
               CouncilEx.start(spec, "q")
    end
  end

  describe "configuration (CouncilEx.Providers)" do
    setup do
      on_exit(fn -> Application.delete_env(:council_ex, :providers) end)
    end

    test "defaults merge under each member's options; the member wins" do
      {:ok, spec} =
        Spec.new(
          id: "cfg",
          members: [
            [id: :a, provider: :openai, model: "mine", temperature: 0.9],
            [id: :b, provider: :openai, api_key: {:system, "B_KEY"}],
            [id: :c, provider: :gemini, model: "g"],
            [id: :m, provider: :mock]
          ],
          rounds: [[type: :independent_analysis]]
        )

      config = [
        openai: [
          model: "default-model",
          temperature: 0.1,
          api_key: {:system, "CFG_OPENAI"},
          headers: [x_team: "t1"]
        ],
        mock: []
      ]

      assert_raise ArgumentError, ~r/unknown provider :mock/, fn ->
        Providers.resolve(spec, config: config, external: false)
      end

      config = Keyword.delete(config, :mock)
      assert {:ok, r} = Providers.resolve(spec, config: config, external: false)
      [a, b, c, m] = r.members

      assert a.options == %{
               "model" => "mine",
               "temperature" => 0.9,
               "api_key_env" => "CFG_OPENAI",
               "headers" => %{"x_team" => "t1"}
             }

      assert b.options["model"] == "default-model"
      assert b.options["api_key_env"] == "B_KEY"
      assert c.options == %{"model" => "g"}
      assert m.options == %{}
      # what is sent holds no api_key at all
      refute Spec.to_json(r) =~ "api_key\""

      # the application environment is the default
      Application.put_env(:council_ex, :providers, config)
      assert Providers.resolve(spec) == {:ok, r}

      assert {:ok, checked} =
               CouncilEx.RunServer.check_spec(run_id: nil, council: "x", spec: spec, input: "q")

      assert checked[:spec] == r
    end

    test "a literal configured key: a generated variable for the managed node, refused for an external one" do
      {:ok, spec} = one(id: :c, provider: :anthropic, model: "claude")
      config = [anthropic: [api_key: "sk-ant-literal-777"]]

      assert {:ok, r} = Providers.resolve(spec, config: config, external: false)

      assert hd(r.members).options == %{
               "model" => "claude",
               "api_key_env" => "COUNCIL_EX_KEY_ANTHROPIC"
             }

      refute inspect(r) =~ "sk-ant-literal-777"
      refute Spec.to_json(r) =~ "sk-ant-literal-777"

      assert {:error, {:provider_config, :anthropic, message}} =
               Providers.resolve(spec, config: config, external: true)

      assert message =~ "external"
      refute message =~ "sk-ant-literal-777"

      # the node's environment, made only when it is spawned
      Application.put_env(:council_ex, :providers,
        anthropic: [api_key: "sk-ant-literal-777"],
        openai: [api_key: {:system, "X"}]
      )

      assert Providers.node_env() == [{~c"COUNCIL_EX_KEY_ANTHROPIC", ~c"sk-ant-literal-777"}]

      # a key that cannot be an environment value is left out
      Application.put_env(:council_ex, :providers,
        openai: [api_key: "sk-with\0nul"],
        gemini: [api_key: <<0xFF, 0xFE>>]
      )

      assert Providers.node_env() == []
    end

    test "malformed configuration raises without showing keys" do
      {:ok, spec} = one(id: :c, provider: :openai, model: "m")

      for config <- [:nope, [openai: "sk-not-a-list"], ["sk-bare"]] do
        e = assert_raise ArgumentError, fn -> Providers.resolve(spec, config: config) end
        refute Exception.message(e) =~ "sk-"
      end

      assert {:error, {:provider_config, :openai, _}} =
               Providers.resolve(spec, config: [openai: [api_key: 12]], external: false)
    end
  end

  describe "tool functions (MemberServer.run_tool/3)" do
    test "results: binaries as is, other terms as JSON, {:ok, _} and {:error, _}" do
      args = ~s({"query": "q1"})
      assert MemberServer.run_tool(&ModelTools.lookup/1, args, 1_000) == {:ok, "found q1"}

      assert {:ok, json} = MemberServer.run_tool(&ModelTools.as_map/1, args, 1_000)
      assert CouncilEx.JSON.decode(json) == {:ok, %{"echo" => "q1", "n" => 1}}

      assert {:ok, ~s({"got":"q1"})} = MemberServer.run_tool(&ModelTools.ok_tuple/1, args, 1_000)
      assert MemberServer.run_tool(&ModelTools.error_tuple/1, args, 1_000) == {:error, "not_found"}
      assert MemberServer.run_tool(fn _ -> nil end, args, 1_000) == {:ok, "null"}
      assert MemberServer.run_tool(fn a -> a end, "", 1_000) == {:ok, "{}"}
    end

    test "a raise, throw, exit, term without JSON, timeout or bad arguments is an error result" do
      args = ~s({"query": "q1"})
      assert MemberServer.run_tool(&ModelTools.raises/1, args, 1_000) == {:error, "kaput"}
      assert {:error, "** (throw) :ball"} = MemberServer.run_tool(&ModelTools.throws/1, args, 1_000)
      assert {:error, "** (exit) :gone"} = MemberServer.run_tool(&ModelTools.exits/1, args, 1_000)

      assert {:error, "the tool returned a term with no JSON form" <> _} =
               MemberServer.run_tool(&ModelTools.no_json/1, args, 1_000)

      assert MemberServer.run_tool(&ModelTools.sleeps/1, args, 100) ==
               {:error, "tool timed out after 100 ms"}

      assert {:error, "tool arguments are not valid JSON" <> _} =
               MemberServer.run_tool(&ModelTools.lookup/1, "{nope", 1_000)

      assert {:error, "tool arguments must be a JSON object" <> _} =
               MemberServer.run_tool(&ModelTools.lookup/1, "[1]", 1_000)

      # nothing left behind in the caller
      refute_received {:EXIT, _, _}
      assert Process.info(self(), :trap_exit) == {:trap_exit, false}
    end

    test "a member server answers a tool call, and an unknown tool with an error" do
      tools = %{{"gpt", "lookup"} => {&ModelTools.lookup/1, 5_000}}
      server = MemberServer.start_for_run!(%{}, [], tools)
      me = self()
      send(server, {:council_tool_call, me, 7, "gpt", "lookup", ~s({"query":"x"})})
      assert_receive {:council_tool_reply, 7, {:ok, "found x"}}
      send(server, {:council_tool_call, me, 8, "gpt", "other", "{}"})

      assert_receive {:council_tool_reply, 8,
                      {:error, "no Elixir function for tool \"other\"" <> _}}

      send(server, {:council_tool_call, me, 9, "zzz", "lookup", "{}"})
      assert_receive {:council_tool_reply, 9, {:error, _}}
      MemberServer.stop(server)
    end
  end

  test "tool events get their round name as an atom, like the other events" do
    call = %{id: "call_1", name: "lookup", arguments: "{}"}

    assert Wire.event({:tool_call_request, "r", "vote", "m", call}) ==
             {:tool_call_request, "r", :vote, "m", call}

    res = Map.merge(call, %{result: "x", status: :ok})

    assert Wire.event({:tool_call_result, "r", "vote", "m", res}) ==
             {:tool_call_result, "r", :vote, "m", res}

    # a name with no atom stays a binary
    assert {:tool_call_result, "r", "no atom has this name", "m", ^res} =
             Wire.event({:tool_call_result, "r", "no atom has this name", "m", res})
  end
end
