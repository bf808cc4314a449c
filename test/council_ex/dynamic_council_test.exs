defmodule CouncilEx.DynamicCouncilTest do
  use ExUnit.Case, async: true

  alias CouncilEx.DynamicCouncil
  doctest CouncilEx.DynamicCouncil

  @map %{members: [%{id: "a", provider: "mock"}], rounds: [%{type: "vote"}]}

  test "ids get the dynamic: prefix once" do
    assert {:ok, %{id: "dynamic:x"}} = DynamicCouncil.to_spec(Map.put(@map, :id, "x"))
    assert {:ok, %{id: "dynamic:x"}} = DynamicCouncil.to_spec(Map.put(@map, "id", "dynamic:x"))
    assert {:ok, %{id: "dynamic:" <> hash}} = DynamicCouncil.to_spec(@map)
    assert byte_size(hash) == 16
    assert {:ok, %{id: "dynamic:" <> ^hash}} = DynamicCouncil.to_spec(@map)
  end

  test "keyword lists and string keys" do
    assert {:ok, spec} =
             DynamicCouncil.to_spec(
               id: "k",
               members: [[id: :a, provider: :mock]],
               rounds: [[type: :vote]]
             )

    assert {:ok, ^spec} =
             DynamicCouncil.to_spec(%{
               "id" => "k",
               "members" => [%{"id" => "a", "provider" => "mock"}],
               "rounds" => [%{"type" => "vote"}]
             })
  end

  test "a beam member named in JSON needs an existing module" do
    json =
      ~s({"id": "b", "members": [{"id": "m", "provider": "beam", "options": {"module": "Elixir.CouncilEx.Test.EchoMember"}}], "rounds": [{"type": "vote"}]})

    assert {:ok, %{members: [%{provider: :beam, module: CouncilEx.Test.EchoMember, options: %{}}]}} =
             DynamicCouncil.to_spec(json)

    bad = String.replace(json, "EchoMember", "NoSuchModule#{System.unique_integer([:positive])}")
    assert {:error, "member \"m\": unknown module" <> _} = DynamicCouncil.to_spec(bad)

    assert {:error, "member \"m\": provider beam needs a module" <> _} =
             DynamicCouncil.to_spec(%{@map | members: [%{id: "m", provider: "beam"}]})
  end

  test "invalid JSON and bad shapes give errors, to_spec! raises" do
    assert {:error, "spec: invalid JSON" <> _} = DynamicCouncil.to_spec("{nope")
    assert {:error, "spec: JSON must be an object" <> _} = DynamicCouncil.to_spec("[1]")
    assert {:error, "spec: expected" <> _} = DynamicCouncil.to_spec(42)

    assert_raise ArgumentError, ~r/rounds: empty/, fn ->
      DynamicCouncil.to_spec!(%{@map | rounds: []})
    end
  end
end
