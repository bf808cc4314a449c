defmodule CouncilEx.SchemaTest do
  use ExUnit.Case, async: true
  doctest CouncilEx.Schema

  alias CouncilEx.{Schema, Spec}

  test "the library's rules are the core's" do
    assert Spec.round_types() == Schema.round_types()
    assert Spec.model_providers() == Schema.model_providers()
    assert Enum.sort(Spec.providers()) == Enum.sort([:beam | Schema.providers()])
    assert Enum.sort(Spec.limit_keys()) == Enum.sort(Schema.limit_keys())
    assert CouncilEx.PubSub.topic("r1") == Schema.topic_prefix() <> "r1"
    assert CouncilEx.RunServer.default_registry() ==
             String.to_atom("Elixir." <> Schema.default_registry())
  end

  test "each limit's maximum is accepted and one more is refused" do
    for key <- Schema.limit_keys() do
      max = Schema.limit_max(key)
      base = [id: "x", members: [[id: "a", provider: :mock]], rounds: [[type: :vote]]]
      assert {:ok, _} = Spec.new(base ++ [limits: [{key, max}]])
      assert {:error, message} = Spec.new(base ++ [limits: [{key, max + 1}]])
      assert message =~ "limits.#{key}"
    end
  end
end
