defmodule CouncilEx.SpecNodeAlignmentTest do
  # Spec.check/1 accepts what the C node accepts (limits of 0, repeated
  # round names, a council member with an invalid nested spec), refuses
  # what it refuses, and names the fields with the node's paths.
  use ExUnit.Case, async: false
  @moduletag :cnode

  alias CouncilEx.Spec
  alias CouncilEx.Spec.Round

  defp base,
    do:
      Spec.new!(
        id: "align",
        members: [[id: :a, provider: :mock], [id: :b, provider: :mock]],
        rounds: [[type: :independent_analysis]]
      )

  # The C node's own answer to a spec (sent as JSON, unchecked here), or
  # the NIF's (the same core, the same answers).
  defp node_check(%Spec{} = spec) do
    CouncilEx.Backend.start(:start, %{spec: Spec.to_json(spec), input: "q", run_id: nil})
  end

  defp node_accepts(spec) do
    case node_check(spec) do
      {:ok, pid} when is_pid(pid) -> true
      {:error, {:invalid_spec, _, _}} = e -> flunk("C node refused: #{inspect(e)}")
    end
  end

  test "limits of 0 are accepted, as by the C node" do
    spec = %{base() | limits: %{max_attempts: 0, concurrency: 0}}
    assert {:ok, checked} = Spec.check(spec)
    assert node_accepts(checked)
    assert {:ok, %{final: _}} = CouncilEx.run(checked, "q", timeout: 15_000)
  end

  test "repeated round names are accepted, as by the C node" do
    spec = %{
      base()
      | rounds:
          base().rounds ++ [%Round{type: :vote, name: "vote"}, %Round{type: :vote, name: "vote"}]
    }

    assert {:ok, checked} = Spec.check(spec)
    assert node_accepts(checked)
    assert {:ok, %{rounds: [_, %{name: :vote}, %{name: :vote}]}} = CouncilEx.run(checked, "q")

    assert {:ok, _} =
             Spec.new(
               id: "dups",
               members: [[id: :a, provider: :mock]],
               rounds: [[type: :vote], [type: :vote]]
             )
  end

  test "a council member with an invalid nested spec: the parent is accepted, the member fails" do
    {:ok, spec} =
      Spec.new(
        id: "parent",
        members: [
          [id: :a, provider: :mock],
          [id: :p, provider: :council, spec: %{id: "bad", members: [], rounds: [%{type: :vote}]}]
        ],
        rounds: [[type: :independent_analysis]]
      )

    assert {:ok, checked} = Spec.check(spec)
    assert node_accepts(checked)
    assert {:ok, %{rounds: [%{members: members}]}} = CouncilEx.run(checked, "q")
    assert Enum.any?(members, &(&1.member_id == "p" and to_string(&1.error) =~ "sub-council"))
  end

  test "what the node refuses is still refused, with the node's field" do
    for {limits, field} <- [
          {%{max_attempts: 11}, "limits.max_attempts"},
          {%{concurrency: 4097}, "limits.concurrency"},
          {%{backoff_ms: -1}, "limits.backoff_ms"},
          {%{member_timeout_ms: 86_400_001}, "limits.member_timeout_ms"}
        ] do
      spec = %{base() | limits: limits}
      assert {:error, {:invalid_spec, ^field, _}} = Spec.check(spec)
      assert {:error, {:invalid_spec, ^field, _}} = node_check(spec)
    end

    [a, b] = base().members
    spec = %{base() | members: [a, b, a]}
    assert {:error, {:invalid_spec, "members[2].id", _}} = Spec.check(spec)
    assert {:error, {:invalid_spec, "members[2].id", _}} = node_check(spec)

    nested = %Round{
      type: :iterate,
      name: "loop",
      rounds: [%Round{type: :critique, name: "c"}, %Round{type: :vote, name: "v"}]
    }

    spec = %{base() | rounds: base().rounds ++ [nested]}

    bad_type =
      put_in(spec.rounds, base().rounds ++ [%{nested | rounds: [%Round{type: :bogus, name: "x"}]}])

    assert {:error, {:invalid_spec, "rounds[1].options.rounds[0].type", _}} = Spec.check(bad_type)
    assert {:error, {:invalid_spec, "rounds[1].options.rounds[0].type", _}} = node_check(bad_type)

    bad_until = put_in(spec.rounds, base().rounds ++ [%{nested | options: %{"until" => "never"}}])
    assert {:error, {:invalid_spec, "rounds[1].options.until", _}} = Spec.check(bad_until)
    assert {:error, {:invalid_spec, "rounds[1].options.until", _}} = node_check(bad_until)
  end

  test "model providers: accepted alike; a literal key and a missing model refused at the same field" do
    members =
      for p <- Spec.model_providers(),
          do: %Spec.Member{id: "m_#{p}", provider: p, options: %{"model" => "some-model"}}

    spec = %{base() | members: base().members ++ members}
    assert {:ok, checked} = Spec.check(spec)
    assert {:ok, pid} = node_check(checked)
    CouncilEx.cancel(pid)

    [a, b] = base().members

    keyed = %Spec.Member{
      id: "k",
      provider: :openai,
      options: %{"model" => "m", "api_key" => "sk-1"}
    }

    spec = %{base() | members: [a, b, keyed]}
    assert {:error, {:invalid_spec, "members[2].options.api_key", _}} = Spec.check(spec)
    assert {:error, {:invalid_spec, "members[2].options.api_key", _}} = node_check(spec)

    # the model may come from the configuration: checked when a run starts
    modelless = %Spec.Member{id: "n", provider: :anthropic, options: %{}}
    spec = %{base() | members: [a, modelless]}
    opts = [run_id: nil, council: "x", spec: spec, input: "q"]

    assert {:error, {:invalid_spec, "members[1].options.model", _}} =
             CouncilEx.RunServer.check_spec(opts)

    assert {:error, {:invalid_spec, "members[1].options.model", _}} = node_check(spec)
  end
end
