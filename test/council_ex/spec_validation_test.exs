defmodule CouncilEx.SpecValidationTest do
  # A %CouncilEx.Spec{} built by hand is checked in Elixir before anything
  # is sent to the C node (SPEC section 9), with the C node's error shape
  # {:invalid_spec, field, message}; provider native is refused.
  use ExUnit.Case, async: false
  @moduletag :cnode

  import CouncilEx.Test.Helpers
  alias CouncilEx.{RunServer, Spec}
  alias CouncilEx.Test.Backend
  alias CouncilEx.Spec.{Member, Round}

  defp base do
    %Spec{
      id: "hand-built",
      members: [
        %Member{id: "a", provider: :mock},
        %Member{id: "b", provider: :mock, options: %{"latency_ms" => 1}}
      ],
      rounds: [%Round{type: :independent_analysis, name: "independent_analysis"}]
    }
  end

  defp opts(spec), do: [run_id: run_id("hb"), council: "hand-built", spec: spec, input: "q"]

  # Every request to the C node's service (or the NIF) fails meanwhile: a
  # start that still gives {:invalid_spec, ...} did not ask the backend.
  defp without_c_node(fun), do: Backend.without_backend(fun)

  test "an invalid spec is refused by RunServer.start/1 and start_link/1 without the C node" do
    spec = %{base() | rounds: []}

    without_c_node(fn ->
      # the C node's service is out of reach: a valid start cannot work
      assert Backend.unreachable() == RunServer.start(opts(base()))

      assert {:error, {:invalid_spec, "rounds", "empty" <> _}} = RunServer.start(opts(spec))
      assert {:error, {:invalid_spec, "rounds", _}} = RunServer.start_link(opts(spec))
    end)

    # and the same with the C node in reach
    assert {:error, {:invalid_spec, "rounds", _}} = RunServer.start(opts(spec))
  end

  test "CouncilEx.start/3, start_link/3, run/3 and Supervisor.start_link/4 refuse it before the relay or the C node" do
    spec = %{base() | chair: "nobody"}
    sup = start_supervised!({CouncilEx.Supervisor, name: :spec_validation_sup})

    without_c_node(fn ->
      for start <- [
            &CouncilEx.start(&1, "q"),
            &CouncilEx.start(&1, "q", subscribe: true),
            &CouncilEx.start_link(&1, "q"),
            &CouncilEx.run(&1, "q"),
            &CouncilEx.run(&1, "q", subscribe: true),
            &CouncilEx.Supervisor.start_link(sup, &1, "q"),
            &CouncilEx.Supervisor.start_run(sup, &1, "q")
          ] do
        assert {:error,
                {:invalid_council,
                 [%{path: "chair", code: :invalid_spec, message: "\"nobody\" is not a member"}]}} =
                 start.(spec)
      end
    end)

    assert Backend.starts_under_way() == 0
    assert CouncilEx.Supervisor.count_runs(sup) == 0
  end

  test "the field is a path into the spec, as the C node writes it" do
    check = fn spec -> Spec.check(spec) end
    [a, b] = base().members

    assert {:error, {:invalid_spec, "members[2].id", "duplicate ids [\"a\"]"}} =
             check.(%{base() | members: [a, b, a]})

    assert {:error, {:invalid_spec, "members[1].provider", "unknown provider \"bogus\"" <> _}} =
             check.(%{base() | members: [a, %{b | provider: :bogus}]})

    assert {:error, {:invalid_spec, "members[1].id", _}} =
             check.(%{base() | members: [a, %{b | id: ""}]})

    assert {:error, {:invalid_spec, "limits.max_attempts", "must be an integer from 0 to 10" <> _}} =
             check.(%{base() | limits: %{max_attempts: -1}})

    assert {:error, {:invalid_spec, "id", _}} = check.(%{base() | id: nil})

    iterate = %Round{
      type: :iterate,
      name: "loop",
      options: %{"until" => "consensus"},
      rounds: [
        %Round{type: :critique, name: "critique"},
        %Round{type: :vote, name: "ballot", options: %{"members" => ["a", "zed"]}}
      ]
    }

    assert {:error,
            {:invalid_spec, "rounds[1].options.rounds[1].options.members[1]",
             "members names unknown member \"zed\""}} =
             check.(%{base() | rounds: base().rounds ++ [iterate]})

    assert {:error, {:invalid_spec, "rounds[1].options.until", "until must be" <> _}} =
             check.(%{
               base()
               | rounds: base().rounds ++ [%{iterate | options: %{"until" => "never"}}]
             })

    # parts that are not the struct's own structs
    assert {:error, {:invalid_spec, "members", "expected a list of %CouncilEx.Spec.Member{}" <> _}} =
             check.(%{base() | members: [%{id: "a", provider: :mock}]})

    assert {:error, {:invalid_spec, "rounds", _}} = check.(%{base() | rounds: :vote})
    assert {:error, {:invalid_spec, "limits", _}} = check.(%{base() | limits: [max_attempts: 1]})
  end

  test "provider native is refused, naming the member, before the C node" do
    native = %Member{id: "n", provider: :native}

    without_c_node(fn ->
      assert {:error,
              {:invalid_spec, "members[1].provider", "provider native is not available" <> _}} =
               RunServer.start(opts(%{base() | members: [hd(base().members), native]}))
    end)

    assert {:error, "member \"n\": provider native is not available" <> _} =
             Spec.new(id: "x", members: [[id: "n", provider: :native]], rounds: [[type: :vote]])

    assert {:error, "member \"n\": provider native" <> _} =
             CouncilEx.DynamicCouncil.to_spec(
               ~s({"id":"x","members":[{"id":"n","provider":"native"}],"rounds":[{"type":"vote"}]})
             )

    refute :native in Spec.providers()

    assert_raise CompileError, ~r/provider native is not available/, fn ->
      Code.compile_string("""
      defmodule CouncilEx.SpecValidationTest.NativeCouncil do
        use CouncilEx
        member :n, provider: :native
        round :independent_analysis
      end
      """)
    end
  end

  test "a valid hand-built spec is normalised and runs" do
    spec = %Spec{
      id: "hand-built",
      members: [
        %Member{id: :a, provider: :mock, options: %{chunks: 2}},
        %Member{id: :b, provider: :mock}
      ],
      rounds: [
        %Round{type: :independent_analysis, name: :first},
        %Round{type: :vote, name: :ballot}
      ],
      chair: :a
    }

    assert {:ok, %Spec{members: [%Member{id: "a", options: %{"chunks" => 2}} | _], chair: "a"}} =
             Spec.check(spec)

    assert {:ok, %{final: final, rounds: [%{name: :first}, %{name: :ballot} | _]}} =
             CouncilEx.run(spec, "q")

    assert is_binary(final)
  end
end
