defmodule CouncilEx.SpecTest do
  use ExUnit.Case, async: true

  alias CouncilEx.Spec
  doctest CouncilEx.Spec

  @base %{
    id: "dynamic:t",
    members: [%{id: :a, provider: :mock}, %{id: "b", provider: "exec", argv: ["cat"]}],
    rounds: [%{type: :independent_analysis}, %{type: "vote", name: "final"}]
  }

  test "new/1 normalises ids, names, providers and option keys" do
    assert {:ok, spec} = Spec.new(@base)

    assert [
             %Spec.Member{id: "a", provider: :mock, options: %{}},
             %Spec.Member{id: "b", provider: :exec, options: %{"argv" => ["cat"]}}
           ] = spec.members

    assert [
             %Spec.Round{type: :independent_analysis, name: "independent_analysis"},
             %Spec.Round{type: :vote, name: "final"}
           ] = spec.rounds

    assert spec.chair == nil and spec.limits == %{}
  end

  test "a module provider becomes beam with the module kept" do
    assert {:ok, spec} =
             Spec.new(%{@base | members: [%{id: :m, provider: CouncilEx.Test.EchoMember}]})

    assert [%Spec.Member{provider: :beam, module: CouncilEx.Test.EchoMember, options: %{}}] =
             spec.members

    assert %{"provider" => "beam", "options" => %{"module" => "Elixir.CouncilEx.Test.EchoMember"}} =
             hd(Spec.to_map(spec)["members"])

    assert Spec.beam_members(spec) == %{"m" => CouncilEx.Test.EchoMember}
  end

  test "to_json/1 gives the documented JSON object" do
    spec =
      Spec.new!(Map.merge(@base, %{chair: :a, limits: [member_timeout_ms: 100, max_attempts: 2]}))

    assert {:ok, json} = CouncilEx.JSON.decode(Spec.to_json(spec))

    assert json == %{
             "id" => "dynamic:t",
             "members" => [
               %{"id" => "a", "provider" => "mock", "options" => %{}},
               %{"id" => "b", "provider" => "exec", "options" => %{"argv" => ["cat"]}}
             ],
             "rounds" => [
               %{
                 "type" => "independent_analysis",
                 "name" => "independent_analysis",
                 "options" => %{}
               },
               %{"type" => "vote", "name" => "final", "options" => %{}}
             ],
             "chair" => "a",
             "limits" => %{"member_timeout_ms" => 100, "max_attempts" => 2}
           }
  end

  test "iterate rounds carry nested rounds, max_iterations and until" do
    spec =
      Spec.new!(%{
        @base
        | rounds: [
            %{
              type: :iterate,
              max_iterations: 2,
              until: "consensus",
              rounds: [%{type: :critique}, %{type: :vote}]
            }
          ]
      })

    assert [
             %{
               "type" => "iterate",
               "options" => %{"max_iterations" => 2, "until" => "consensus"},
               "rounds" => [%{"type" => "critique"}, %{"type" => "vote"}]
             }
           ] = Spec.to_map(spec)["rounds"]
  end

  describe "validation errors name the field" do
    test "missing and empty members / rounds" do
      assert {:error, "members: missing" <> _} = Spec.new(Map.delete(@base, :members))
      assert {:error, "members: empty" <> _} = Spec.new(%{@base | members: []})
      assert {:error, "rounds: missing" <> _} = Spec.new(Map.delete(@base, :rounds))
      assert {:error, "rounds: empty" <> _} = Spec.new(%{@base | rounds: []})
      assert {:error, "id: missing"} = Spec.new(Map.delete(@base, :id))
    end

    test "unknown provider, round type, duplicate ids and names" do
      assert {:error, "member \"a\": unknown provider :gpt" <> _} =
               Spec.new(%{@base | members: [%{id: :a, provider: :gpt}]})

      assert {:error, "member \"a\": provider missing"} = Spec.new(%{@base | members: [%{id: :a}]})

      assert {:error, "rounds[0]: unknown round type \"debate\"" <> _} =
               Spec.new(%{@base | rounds: [%{type: "debate"}]})

      assert {:error, "members: duplicate ids [\"a\"]"} =
               Spec.new(%{
                 @base
                 | members: [%{id: :a, provider: :mock}, %{id: "a", provider: :mock}]
               })

      # round names may repeat, as in the C node
      assert {:ok, %Spec{rounds: [%{name: "vote"}, %{name: "vote"}]}} =
               Spec.new(%{@base | rounds: [%{type: :vote}, %{type: :vote}]})
    end

    test "chair, limits, gating and iterate options" do
      assert {:error, "chair: \"z\" is not a member"} = Spec.new(Map.put(@base, :chair, :z))

      assert {:error, "limits: unknown key :speed" <> _} =
               Spec.new(Map.put(@base, :limits, speed: 1))

      assert {:error, "limits.max_attempts: must be an integer from 0 to 10" <> _} =
               Spec.new(Map.put(@base, :limits, max_attempts: 11))

      assert {:error, "limits.backoff_ms: must be an integer from 0 to 600000" <> _} =
               Spec.new(Map.put(@base, :limits, backoff_ms: -1))

      assert {:error, "round \"vote\": members names unknown member \"z\""} =
               Spec.new(%{@base | rounds: [%{type: :vote, members: [:z]}]})

      assert {:error, "round \"iterate\": iterate needs nested rounds"} =
               Spec.new(%{@base | rounds: [%{type: :iterate}]})

      assert {:error, "round \"iterate\": until must be" <> _} =
               Spec.new(%{
                 @base
                 | rounds: [%{type: :iterate, until: "forever", rounds: [%{type: :vote}]}]
               })

      assert {:error, "round \"vote\": only iterate rounds have nested rounds"} =
               Spec.new(%{@base | rounds: [%{type: :vote, rounds: [%{type: :vote}]}]})

      assert {:error, "spec: unknown keys [:colour]"} = Spec.new(Map.put(@base, :colour, "red"))
    end

    test "new!/1 raises ArgumentError" do
      assert_raise ArgumentError, ~r/invalid council spec: members: empty/, fn ->
        Spec.new!(%{@base | members: []})
      end
    end

    test "options without a JSON form are refused when encoding" do
      spec = Spec.new!(%{@base | members: [%{id: :a, provider: :mock, pid: self()}]})
      assert_raise ArgumentError, ~r/cannot encode as JSON/, fn -> Spec.to_json(spec) end
    end
  end

  test "validate/1 accepts what new/1 built" do
    spec =
      Spec.new!(%{
        @base
        | members: [%{id: :m, provider: CouncilEx.Test.EchoMember}, %{id: :n, provider: :mock}]
      })

    assert {:ok, ^spec} = Spec.validate(spec)
  end

  test "a council member carries its sub-council spec as JSON" do
    spec = CouncilEx.Test.ParentCouncil.__council__()

    assert [%Spec.Member{id: "panel", provider: :council, options: %{"spec" => sub}}, _] =
             spec.members

    assert sub == Spec.to_map(CouncilEx.Test.QuickCouncil.__council__())

    from_map =
      Spec.new!(%{
        @base
        | members: [
            %{
              id: :panel,
              provider: "council",
              options: %{
                "spec" =>
                  CouncilEx.JSON.decode(Spec.to_json(CouncilEx.Test.QuickCouncil.__council__()))
                  |> elem(1)
              }
            }
          ]
      })

    assert hd(from_map.members).options["spec"] == sub

    assert {:error, "member \"p\": provider council needs option spec" <> _} =
             Spec.new(%{@base | members: [%{id: :p, provider: :council}]})

    # an invalid nested spec is the member's error per call at the C node,
    # not the parent's: it is sent as it is
    assert {:ok, %Spec{members: [%{options: %{"spec" => %{"members" => []}}}]}} =
             Spec.new(%{
               @base
               | members: [
                   %{id: :p, provider: :council, spec: %{members: [], rounds: [%{type: :vote}]}}
                 ]
             })

    assert {:error, "member \"p\": spec String is not a council module"} =
             Spec.new(%{@base | members: [%{id: :p, provider: :council, spec: String}]})
  end
end
