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

  test "a spec's structure and each round type's own options are checked as the schema says" do
    rules = Schema.spec_rules()
    members = [[id: "a", provider: :mock]]
    assert Enum.sort(Map.keys(rules["keys"])) == ~w(chair id limits members rounds router)

    for type <- Schema.round_types(), {name, rule} <- Schema.round_options(type, own: true) do
      nested = if type == :iterate, do: [rounds: [[type: :vote]]], else: []

      spec = fn value ->
        [
          id: "x",
          members: members,
          rounds: [[{:type, type}, {String.to_atom(name), value} | nested]]
        ]
      end

      path = "rounds[0].options.#{name}"

      case rule do
        %{"kind" => "enum", "values" => values} ->
          for v <- values, do: assert({:ok, _} = Spec.new(spec.(v)))
          {:ok, bad} = with_struct(spec.(hd(values)), name, "no_such_value")
          assert {:error, {:invalid_spec, ^path, _}} = Spec.check(bad)

        %{"kind" => "integer", "min" => min, "max" => max} ->
          assert {:ok, _} = Spec.new(spec.(min))
          assert {:ok, _} = Spec.new(spec.(max))
          assert {:error, _} = Spec.new(spec.(min - 1))
          assert {:error, _} = Spec.new(spec.(max + 1))

        %{"kind" => "member_id"} ->
          assert {:ok, _} = Spec.new(spec.(:a))
          assert {:error, _} = Spec.new(spec.(:z))

        %{"kind" => "rounds"} ->
          assert {:error, _} = Spec.new(id: "x", members: members, rounds: [[type: type]])

        _ ->
          :ok
      end
    end

    assert {:error, "members: empty" <> _} = Spec.new(id: "x", members: [], rounds: [[type: :vote]])
  end

  # The spec, valid, then with the round's option set to value in the struct.
  defp with_struct(attrs, name, value) do
    {:ok, spec} = Spec.new(attrs)
    [round] = spec.rounds
    {:ok, %{spec | rounds: [%{round | options: Map.put(round.options, name, value)}]}}
  end
end
