defmodule CouncilEx.RouterTest.ByTopic do
  @moduledoc "A CouncilEx.Router module: the members whose id the input names."
  @behaviour CouncilEx.Router

  @impl true
  def select(%{topic: topic}, ctx), do: Enum.filter(ctx.members, &(&1 == topic))
end

defmodule CouncilEx.RouterTest.Branches do
  @moduledoc "Two branches after an analysis; an inline router picks one by the input."
  use CouncilEx

  member :a, provider: :mock
  member :b, provider: :mock
  member :c, provider: :mock
  round :independent_analysis

  round :peer_review,
    name: :tax_branch,
    router: fn input, _ctx -> if input =~ "tax", do: [:a, :b], else: [] end

  round :peer_review,
    name: :other_branch,
    router: fn input, _ctx -> if input =~ "tax", do: [], else: ["c"] end
end

defmodule CouncilEx.RouterTest.CouncilWide do
  @moduledoc "A council-wide module router; a round with a router of its own."
  use CouncilEx

  member :a, provider: :mock
  member :b, provider: :mock
  router(CouncilEx.RouterTest.ByTopic)
  round :independent_analysis
  round :peer_review, router: [rules: [[members: [:a, :b]]]]
end

defmodule CouncilEx.RouterTest.Nested do
  @moduledoc "An inline council router; an inline router on a round inside an iterate."
  use CouncilEx

  member :a, provider: :mock
  member :b, provider: :mock
  router(fn _input, _ctx -> [:a] end)
  round :independent_analysis

  round :iterate, max_iterations: 2 do
    round :peer_review, router: fn _input, ctx -> if ctx.round.idx == 2, do: [:b], else: [] end
  end
end

defmodule CouncilEx.RouterTest do
  use ExUnit.Case, async: false
  @moduletag :cnode

  import CouncilEx.Test.Helpers
  alias CouncilEx.RouterTest.{Branches, CouncilWide}

  defp statuses(result, round) do
    r = Enum.find(result.rounds, &(&1.name == round))
    Map.new(r.members, &{&1.member_id, &1.status})
  end

  defp dynamic(router, extra \\ %{}) do
    %{
      id: "routed",
      members: [%{id: "a", provider: :mock}, %{id: "b", provider: :mock}],
      rounds: [%{type: :independent_analysis, router: router}]
    }
    |> Map.merge(extra)
    |> CouncilEx.Spec.new!()
  end

  defp dynamic_map(router, extra \\ %{}) do
    Map.merge(
      %{
        id: "routed",
        members: [%{id: "a", provider: :mock}, %{id: "b", provider: :mock}],
        rounds: [%{type: :independent_analysis, router: router}]
      },
      extra
    )
  end

  test "an inline router chooses a branch: the other branch's round is skipped" do
    id = run_id()
    {:ok, _} = CouncilEx.start(Branches, "a tax question", run_id: id, subscribe: true)
    events = collect_events(id)
    assert {:run_completed, ^id, result} = List.last(events)

    assert statuses(result, :tax_branch) == %{"a" => :ok, "b" => :ok, "c" => :skipped}
    assert statuses(result, :other_branch) == %{"a" => :skipped, "b" => :skipped, "c" => :skipped}
    # the skipped round is announced and completed, nobody in it started
    assert {:round_started, id, :other_branch, 2} in events
    assert Enum.any?(events, &match?({:round_completed, ^id, :other_branch, _}, &1))
    refute Enum.any?(events, &match?({:member_started, ^id, :other_branch, _}, &1))
    refute Enum.any?(events, &match?({:member_started, ^id, :tax_branch, "c"}, &1))
    # the final answer is the branch taken's
    tax = Enum.find(result.rounds, &(&1.name == :tax_branch))
    assert result.final == tax.text

    {:ok, result} = CouncilEx.run(Branches, "about the weather")
    assert statuses(result, :tax_branch) == %{"a" => :skipped, "b" => :skipped, "c" => :skipped}
    assert statuses(result, :other_branch) == %{"a" => :skipped, "b" => :skipped, "c" => :ok}
  end

  test "a CouncilEx.Router module sees the input term and the context; a round's own router wins" do
    {:ok, result} = CouncilEx.run(CouncilWide, %{topic: "b"})
    assert statuses(result, :independent_analysis) == %{"a" => :skipped, "b" => :ok}
    # peer_review has its own router (the core's rules): both
    assert statuses(result, :peer_review) == %{"a" => :ok, "b" => :ok}
  end

  test "the context: run, round, members to choose among, earlier rounds, user_opts" do
    me = self()

    router = fn input, ctx ->
      send(me, {:routed, input, ctx})
      ctx.members
    end

    spec =
      CouncilEx.Spec.new!(%{
        id: "ctx",
        members: [%{id: "a", provider: :mock}, %{id: "b", provider: :mock}],
        rounds: [%{type: :independent_analysis}, %{type: :critique, members: ["b"]}],
        router: router
      })

    {:ok, _} = CouncilEx.run(spec, {:q, 1}, run_id: id = run_id(), user_opts: [k: 1])
    assert_receive {:routed, {:q, 1}, %{round: %{name: "independent_analysis", idx: 0}} = c0}
    assert c0.run_id == id
    assert c0.members == ["a", "b"]
    assert c0.rounds == []
    assert c0.user_opts == [k: 1]
    assert_receive {:routed, {:q, 1}, %{round: %{name: "critique", idx: 1}} = c1}
    assert c1.members == ["b"]
    assert [%{name: "independent_analysis", members: [%{status: :ok} | _]}] = c1.rounds
  end

  test "inline routers in the DSL, for the council and inside an iterate, each time it runs" do
    {:ok, result} = CouncilEx.run(CouncilEx.RouterTest.Nested, "q")
    assert statuses(result, :independent_analysis) == %{"a" => :ok, "b" => :skipped}

    reviews =
      for r <- result.rounds,
          r.name == :peer_review,
          do: {r.idx, Map.new(r.members, &{&1.member_id, &1.status})}

    assert reviews == [
             {2, %{"a" => :skipped, "b" => :ok}},
             {3, %{"a" => :skipped, "b" => :skipped}}
           ]

    routers = CouncilEx.Spec.beam_routers(CouncilEx.RouterTest.Nested.__council__())
    assert Enum.sort(Map.keys(routers)) == ["rounds[1].rounds[0]", "router"]
  end

  test "routers registered by name, and the core's rules from JSON" do
    :ok = CouncilEx.Router.register("only_b", fn _input, _ctx -> [:b] end)
    on_exit(fn -> CouncilEx.Router.unregister("only_b") end)

    {:ok, result} = CouncilEx.run(dynamic("only_b"), "q")
    assert statuses(result, :independent_analysis) == %{"a" => :skipped, "b" => :ok}

    json =
      ~s({"id": "j", "members": [{"id": "a", "provider": "mock"}, {"id": "b", "provider": "mock"}],
               "router": {"rules": [{"when": {"input_contains": "alpha"}, "members": ["a"]}],
                          "default": ["b"]},
               "rounds": [{"type": "independent_analysis"}]})

    {:ok, spec} = CouncilEx.DynamicCouncil.to_spec(json)
    {:ok, result} = CouncilEx.run(spec, "ALPHA please")
    assert statuses(result, :independent_analysis) == %{"a" => :ok, "b" => :skipped}
    {:ok, result} = CouncilEx.run(spec, "beta")
    assert statuses(result, :independent_analysis) == %{"a" => :skipped, "b" => :ok}
  end

  test "a router that raises, returns garbage or names a stranger fails the run clearly" do
    cases = [
      {fn _, _ -> raise "lost the map" end, "the router raised: lost the map"},
      {fn _, _ -> {:ok, :a} end, "the router returned {:ok, :a}, expected a list of member ids"},
      {fn _, _ -> [:a, :zed] end, ~s(chose "zed", which is not one of the round's members)},
      {fn _, _ -> exit(:gone) end, "the router failed: ** (exit) :gone"}
    ]

    for {router, expected} <- cases do
      id = run_id()

      assert {:error, {:failed, [error], result}} = CouncilEx.run(dynamic(router), "q", run_id: id)

      assert %CouncilEx.Error{kind: :permanent, round_name: :independent_analysis} = error
      assert error.message =~ "round independent_analysis: router beam failed: "
      assert error.message =~ expected
      assert result.rounds == []
      # the run is over and readable; nothing crashed
      assert {:ok, %{status: :failed}} = CouncilEx.RunServer.state(id)
    end

    # the backend still serves runs
    assert {:ok, _} = CouncilEx.run(dynamic(fn _, ctx -> ctx.members end), "q")
  end

  test "an unknown router is refused before the run starts" do
    assert {:error, {:invalid_council, [%{path: "rounds[0].options.router", message: message}]}} =
             CouncilEx.start(dynamic("nobody_registered_this"), "q")

    assert message =~ "no router registered as \"nobody_registered_this\""

    assert {:error, {:invalid_council, [%{path: "router"}]}} =
             CouncilEx.start(dynamic(nil, %{router: String}), "q")

    assert CouncilEx.validate(dynamic("nobody_registered_this")) ==
             {:error,
              [
                %{
                  path: "rounds[0].options.router",
                  code: :invalid_spec,
                  message:
                    "no router registered as \"nobody_registered_this\" (CouncilEx.Router.register/2)"
                }
              ]}

    # the same refusal when the run server is started directly
    assert {:error, {:invalid_spec, "rounds[0].options.router", _}} =
             CouncilEx.RunServer.start(
               run_id: run_id(),
               council: "routed",
               spec: dynamic("nobody_registered_this"),
               input: "q"
             )

    assert {:error, message} = CouncilEx.Spec.new(dynamic_map(fn _ -> [] end))
    assert message =~ "expected a function of two arguments"

    # the core's own check of rules
    assert {:error, {:invalid_council, [%{path: "rounds[0].options.router.rules[0].members"}]}} =
             CouncilEx.start(dynamic(%{rules: [%{members: ["zed"]}]}), "q")
  end

  test "CouncilEx.Router.call/3 checks what a router answers" do
    assert CouncilEx.Router.call(CouncilEx.RouterTest.ByTopic, %{topic: "a"}, %{members: ["a", "b"]}) ==
             {:ok, ["a"]}

    assert {:error, "the router returned nil, expected a list of member ids"} =
             CouncilEx.Router.call(fn _, _ -> nil end, 1, %{})

    assert {:error, _} = CouncilEx.Router.call(fn _, _ -> [nil] end, 1, %{})
  end
end
