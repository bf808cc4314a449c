defmodule CouncilEx.ValidateTest do
  # CouncilEx.validate/1 gives the core's verdict on a council as a list of
  # %{path, code, message}; start/3, start_link/3 and run/3 refuse an
  # invalid council with {:invalid_council, errors} before a run exists.
  # A round's failure_mode, :continue or :fail_fast, both ways.
  use ExUnit.Case, async: false
  @moduletag :cnode
  doctest CouncilEx, only: [validate: 1]

  alias CouncilEx.Spec
  alias CouncilEx.Spec.{Member, Round}
  alias CouncilEx.Test.Backend

  defp spec(rounds, members \\ [[id: :a, provider: :mock], [id: :b, provider: :mock]]) do
    Spec.new!(id: "validate", members: members, rounds: rounds)
  end

  test "a valid council, by module or spec: :ok" do
    assert :ok = CouncilEx.validate(CouncilEx.Test.UserOptsCouncil)
    assert :ok = CouncilEx.validate(spec([[type: :independent_analysis], [type: :vote]]))
  end

  test "each kind of bad council, with its path and code" do
    base = spec([[type: :independent_analysis]])
    [a, b] = base.members

    cases = [
      # the core's own rules (what only the core checks, too)
      {spec([[type: :vote, failure_mode: :sometimes]]), "rounds[0].options.failure_mode",
       :invalid_spec},
      {%{base | chair: "nobody"}, "chair", :invalid_spec},
      {%{base | rounds: []}, "rounds", :invalid_spec},
      {%{base | members: [a, b, a]}, "members[2].id", :invalid_spec},
      {%{base | limits: %{max_attempts: 11}}, "limits.max_attempts", :invalid_spec},
      {%{base | members: [a, %Member{id: "x", provider: :exec}]}, "members[1].options.argv",
       :invalid_spec},
      {%{base | members: [a, %{b | options: %{"max_attempts" => 99}}]},
       "members[1].options.max_attempts", :invalid_spec},
      {%{base | rounds: [%Round{type: :iterate, name: "it", options: %{"until" => "never"},
                                rounds: [%Round{type: :vote, name: "vote"}]}]},
       "rounds[0].options.until", :invalid_spec},
      # providers
      {%{base | members: [a, %{b | provider: :bogus}]}, "members[1].provider", :unknown_provider},
      {%{base | members: [a, %Member{id: "n", provider: :native}]}, "members[1].provider",
       :unknown_provider},
      {spec([[type: :vote]], [[id: :g, provider: :openai]]), "members[0].options.model",
       :invalid_spec}
    ]

    for {council, path, code} <- cases do
      assert {:error, [%{path: ^path, code: ^code, message: message}]} =
               CouncilEx.validate(council),
             "#{path}: #{inspect(CouncilEx.validate(council))}"

      assert is_binary(message) and message != ""
    end

    # the library's own checks need no backend; the core's verdict does
    Backend.without_backend(fn ->
      assert {:error, [%{path: "chair", code: :invalid_spec}]} =
               CouncilEx.validate(%{base | chair: "nobody"})

      assert {:error, [%{path: "$", code: :unavailable}]} = CouncilEx.validate(base)
    end)

    assert {:error, [%{path: "$", code: :not_a_council}]} = CouncilEx.validate(Enum)
    assert {:error, [%{path: "$", code: :not_a_council}]} = CouncilEx.validate("nope")
  end

  test "a spec over the core's size limit, a provider configuration that cannot serve" do
    # the core's max_spec_bytes is 1 MiB (the C node's --max-spec-bytes, the NIF's default)
    big = spec([[type: :vote]], [[id: :a, provider: :mock, text: String.duplicate("x", 1_100_000)]])
    assert {:error, [%{path: "spec", code: :too_big}]} = CouncilEx.validate(big)
    # a start that big is a request over the limits
    assert {:error, :request_too_large} = CouncilEx.start(big, "q")

    model = spec([[type: :vote]], [[id: :g, provider: :openai, model: "m"]])
    Application.put_env(:council_ex, :providers, openai: [api_key: 12])

    try do
      assert {:error, [%{path: "providers.openai", code: :provider_config, message: m}]} =
               CouncilEx.validate(model)

      assert m =~ "api_key"
    after
      Application.delete_env(:council_ex, :providers)
    end
  end

  test "start/3, start_link/3 and run/3 refuse it with {:invalid_council, errors}, no run made" do
    # one the library checks, one only the core does
    local = %{spec([[type: :vote]]) | chair: "nobody"}
    core = spec([[type: :independent_analysis, failure_mode: "maybe"]])
    runs_before = Backend.stats().runs

    for council <- [local, core],
        start <- [
          &CouncilEx.start(&1, "q"),
          &CouncilEx.start(&1, "q", subscribe: true),
          &CouncilEx.start_link(&1, "q"),
          &CouncilEx.run(&1, "q"),
          &CouncilEx.run(&1, "q", subscribe: true)
        ] do
      {:error, errors} = CouncilEx.validate(council)
      assert {:error, {:invalid_council, ^errors}} = start.(council)
    end

    assert Backend.stats().runs == runs_before
  end

  test "failure_mode: :continue (the default) goes on without a failed member; :fail_fast fails the run" do
    members = [[id: :a, provider: :mock], [id: :b, provider: :mock, fail_attempts: [1]]]

    for mode <- [nil, :continue] do
      round = if mode, do: [type: :independent_analysis, failure_mode: mode], else: [type: :independent_analysis]
      assert {:ok, %{rounds: [r, _]}} = CouncilEx.run(spec([round, [type: :vote]], members), "q")
      assert Enum.map(r.members, & &1.status) == [:ok, :error]
    end

    council = spec([[type: :independent_analysis, failure_mode: :fail_fast], [type: :vote]], members)
    assert :ok = CouncilEx.validate(council)
    assert {:error, {:failed, errors, %{rounds: [r], errors: errors}}} = CouncilEx.run(council, "q")
    assert %{member_id: "b", status: :error} = Enum.find(r.members, &(&1.member_id == "b"))

    # errors as data: b's failure (a mock's: transient), then the round's it caused
    assert [
             %CouncilEx.Error{kind: :transient, member_id: "b", round_name: :independent_analysis},
             %CouncilEx.Error{kind: :transient, member_id: "b", round_name: :independent_analysis,
                              message: "round independent_analysis failed: member b failed" <> _}
           ] = errors

    assert Enum.all?(errors, &CouncilEx.Error.retryable?/1)

    # the same in the run_failed event
    run_id = CouncilEx.generate_run_id()
    {:ok, _pid} = CouncilEx.start(council, "q", run_id: run_id, subscribe: true)
    assert_receive {:run_failed, ^run_id, ^errors, %{errors: ^errors}}
  end
end
