defmodule CouncilEx.DSLTest do
  use ExUnit.Case, async: true

  alias CouncilEx.{DynamicCouncil, Spec}
  alias CouncilEx.Test.MockCouncil

  test "__council__/0 returns the validated spec in declaration order" do
    spec = MockCouncil.__council__()
    assert %Spec{id: "Elixir.CouncilEx.Test.MockCouncil", chair: "alpha"} = spec
    assert Enum.map(spec.members, & &1.id) == ["alpha", "beta", "gamma"]
    assert hd(spec.members).options == %{"latency_ms" => 5, "chunks" => 2}

    assert Enum.map(spec.rounds, & &1.type) == [
             :independent_analysis,
             :anonymized_peer_review,
             :vote
           ]

    assert spec.limits == %{
             member_timeout_ms: 5_000,
             max_attempts: 2,
             backoff_ms: 10,
             concurrency: 8
           }
  end

  test "the DSL and DynamicCouncil give equal specs for the same council (apart from the id)" do
    json = ~s({
      "members": [
        {"id": "alpha", "provider": "mock", "options": {"latency_ms": 5, "chunks": 2}},
        {"id": "beta", "provider": "mock", "options": {"latency_ms": 10, "chunks": 3}},
        {"id": "gamma", "provider": "mock", "options": {"latency_ms": 1}}
      ],
      "rounds": [{"type": "independent_analysis"}, {"type": "anonymized_peer_review"}, {"type": "vote"}],
      "chair": "alpha",
      "limits": {"member_timeout_ms": 5000, "max_attempts": 2, "backoff_ms": 10, "concurrency": 8}
    })

    map = %{
      members: [
        %{id: :alpha, provider: :mock, latency_ms: 5, chunks: 2},
        [id: :beta, provider: :mock, options: %{latency_ms: 10, chunks: 3}],
        %{"id" => "gamma", "provider" => "mock", "options" => %{"latency_ms" => 1}}
      ],
      rounds: [
        [type: :independent_analysis],
        %{type: "anonymized_peer_review"},
        %{"type" => "vote"}
      ],
      chair: :alpha,
      limits: %{member_timeout_ms: 5000, max_attempts: 2, backoff_ms: 10, concurrency: 8}
    }

    dsl = MockCouncil.__council__()
    assert {:ok, from_json} = DynamicCouncil.to_spec(json)
    assert {:ok, from_map} = DynamicCouncil.to_spec(map)
    assert %{from_json | id: dsl.id} == dsl
    assert %{from_map | id: dsl.id} == dsl
    # Round-trip through the JSON that is sent to the C node.
    assert {:ok, back} = DynamicCouncil.to_spec(Spec.to_json(dsl))
    assert %{back | id: dsl.id} == dsl
  end

  test "iterate with a do block, renamed and gated rounds, module members" do
    defmodule IterCouncil do
      use CouncilEx, id: "iter"

      member :a, provider: :mock
      member :e, provider: CouncilEx.Test.EchoMember
      round :independent_analysis, name: :first

      round :iterate, max_iterations: 2, until: "consensus" do
        round :critique
        round :vote, members: [:a, :e]
      end

      round :synthesis, member: :e
      chair :a

      def kernel_round, do: Kernel.round(2.6)
    end

    spec = IterCouncil.__council__()
    assert spec.id == "iter"

    assert [
             %{name: "first"},
             %{
               type: :iterate,
               rounds: [%{type: :critique}, %{type: :vote, options: %{"members" => ["a", "e"]}}]
             },
             %{type: :synthesis, options: %{"member" => "e"}}
           ] = spec.rounds

    assert [_, %Spec.Member{id: "e", provider: :beam, module: CouncilEx.Test.EchoMember}] =
             spec.members

    assert IterCouncil.kernel_round() == 3
  end

  test "an invalid council fails compilation with the spec error" do
    assert_raise CompileError, ~r/invalid council .*chair: "nobody" is not a member/, fn ->
      Code.compile_string("""
      defmodule CouncilEx.DSLTest.Bad do
        use CouncilEx
        member :a, provider: :mock
        round :vote
        chair :nobody
      end
      """)
    end

    assert_raise CompileError, ~r/unknown round type "brainstorm"/, fn ->
      Code.compile_string("""
      defmodule CouncilEx.DSLTest.Bad2 do
        use CouncilEx
        member :a, provider: :mock
        round :brainstorm
      end
      """)
    end
  end
end
