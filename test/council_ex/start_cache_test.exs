defmodule CouncilEx.StartCacheTest do
  # A council's spec is checked and encoded once, not on every start
  # (CouncilEx.Spec.checked_json/1 remembers the specs of modules and the
  # %CouncilEx.Spec{} structs starts have checked): a start still sends the
  # council's current spec (after a recompile or a hot reload, whatever a
  # hand-written __council__/0 gives, a struct changed by hand), the run's
  # user_opts and the configuration still apply on every start, and an
  # invalid spec is refused the same way on every start. Through start/3,
  # start_link/3, run/3 and CouncilEx.Supervisor.start_link/4.
  use ExUnit.Case, async: false
  @moduletag :cnode

  import ExUnit.CaptureIO

  @mod CouncilEx.StartCacheTest.Council

  setup do
    on_exit(fn ->
      Application.delete_env(:council_ex, :start_cache_test_member)
      Application.delete_env(:council_ex, :providers)
      Application.delete_env(:council_ex, :default_retry)

      for m <- [@mod, CouncilEx.StartCacheTest.Dynamic] do
        :code.purge(m)
        :code.delete(m)
        :code.purge(m)
      end
    end)
  end

  # (re)defines @mod from source; a redefinition leaves the previous code
  # as the module's old code, as a hot code reload does
  defp compile!(body) do
    source = "defmodule #{inspect(@mod)} do\n#{body}\nend"
    capture_io(:stderr, fn -> Code.compile_string(source) end)
    :ok
  end

  defp dsl(member, extra \\ "") do
    compile!("""
    use CouncilEx
    member :#{member}, provider: :mock#{extra}
    round :independent_analysis
    """)
  end

  # a hand-written __council__/0 (what the DSL would refuse to compile)
  defp hand_written(spec_code) do
    compile!("""
    def __council__, do: #{spec_code}
    """)
  end

  @valid ~s|CouncilEx.Spec.new!(id: "h", members: [[id: :hand, provider: :mock]], rounds: [[type: :independent_analysis]])|

  # the member that answered a completed run (mock: "<id>: ...")
  defp who({:ok, %{final: final}}), do: final |> String.split(":") |> hd()
  defp who(other), do: flunk("expected a completed run, got: #{inspect(other)}")

  # every library start of `council` and the member that answered it
  defp answered_by(council) do
    {:ok, sup} = CouncilEx.Supervisor.start_link()

    starts = [
      fn -> CouncilEx.start(council, "x") end,
      fn -> CouncilEx.start_link(council, "x") end,
      fn -> CouncilEx.Supervisor.start_link(sup, council, "x") end
    ]

    by_pid =
      for start <- starts do
        assert {:ok, pid} = start.()
        who(CouncilEx.await(pid, 10_000))
      end

    Supervisor.stop(sup)
    Enum.uniq([who(CouncilEx.run(council, "x")) | by_pid])
  end

  # every library start's error for `council`
  defp refusals(council) do
    {:ok, sup} = CouncilEx.Supervisor.start_link()

    errors = [
      CouncilEx.start(council, "x"),
      CouncilEx.start_link(council, "x"),
      CouncilEx.run(council, "x"),
      CouncilEx.Supervisor.start_link(sup, council, "x")
    ]

    assert DynamicSupervisor.count_children(sup).active == 0
    Supervisor.stop(sup)
    errors
  end

  test "a recompiled council module starts with its new spec, by every start function" do
    dsl(:alpha)
    assert answered_by(@mod) == ["alpha"]
    assert answered_by(@mod) == ["alpha"]

    # redefined: the previous version stays as old code, as after a reload
    dsl(:beta)
    assert answered_by(@mod) == ["beta"]

    # deleted and compiled again
    :code.purge(@mod)
    :code.delete(@mod)
    dsl(:gamma)
    assert answered_by(@mod) == ["gamma"]

    # back to a spec seen before
    dsl(:alpha)
    assert answered_by(@mod) == ["alpha"]
  end

  test "a __council__/0 that gives another spec each time is started with the one it gives" do
    defmodule Dynamic do
      def __council__ do
        member = Application.fetch_env!(:council_ex, :start_cache_test_member)

        CouncilEx.Spec.new!(
          id: "dyn",
          members: [[id: member, provider: :mock]],
          rounds: [[type: :independent_analysis]]
        )
      end
    end

    for member <- ["one", "two", "one", "three"] do
      Application.put_env(:council_ex, :start_cache_test_member, member)
      assert answered_by(Dynamic) == [member]
    end
  end

  test "an invalid module spec is refused the same way on every start, also after it was valid" do
    hand_written("%{#{@valid} | rounds: []}")

    invalid =
      {:error,
       {:invalid_council,
        [
          %{
            path: "rounds",
            code: :invalid_spec,
            message: "empty (a council needs at least one round)"
          }
        ]}}

    assert refusals(@mod) == List.duplicate(invalid, 4)
    assert refusals(@mod) == List.duplicate(invalid, 4)

    hand_written(@valid)
    assert answered_by(@mod) == ["hand"]

    hand_written("%{#{@valid} | rounds: []}")
    assert refusals(@mod) == List.duplicate(invalid, 4)

    # an invalid member the same: the path and message of Spec.check/1
    hand_written(
      ~s|%{#{@valid} \| members: [%CouncilEx.Spec.Member{id: "m", provider: :nope, options: %{}, tools: %{}}]}|
    )

    assert [{:error, {:invalid_council, [%{path: "members[0].provider"}]}} = first | _] =
             errors = refusals(@mod)

    assert errors == List.duplicate(first, 4)
    assert refusals(@mod) == errors
  end

  test "a module spec with an option that has no JSON form raises ArgumentError on every start" do
    hand_written(
      ~s|CouncilEx.Spec.new!(id: "h", members: [[id: :m, provider: :mock, x: {1, 2}]], rounds: [[type: :independent_analysis]])|
    )

    for _ <- 1..2 do
      for start <- [&CouncilEx.start/2, &CouncilEx.start_link/2, &CouncilEx.run/2] do
        assert_raise ArgumentError, ~r/cannot encode as JSON/, fn -> start.(@mod, "x") end
      end
    end

    hand_written(@valid)
    assert answered_by(@mod) == ["hand"]
  end

  test "the run's user_opts and :default_retry tune each start of a module, not the next ones" do
    dsl(:slow, ", latency_ms: 300")
    assert answered_by(@mod) == ["slow"]

    # the member timeout of this run only
    assert {:error, {:failed, [%CouncilEx.Error{} | _], _}} =
             CouncilEx.run(@mod, "x", user_opts: [member_timeout_ms: 50])

    assert answered_by(@mod) == ["slow"]

    # a retry policy from the configuration: a member failing its first
    # attempt completes with two
    dsl(:flaky, ", fail_attempts: [1]")
    assert {:error, {:failed, _, _}} = CouncilEx.run(@mod, "x")
    Application.put_env(:council_ex, :default_retry, {2, 0})
    assert {:ok, %{final: "flaky" <> _}} = CouncilEx.run(@mod, "x")
    Application.delete_env(:council_ex, :default_retry)
    assert {:error, {:failed, _, _}} = CouncilEx.run(@mod, "x")
    assert {:ok, %{final: "flaky" <> _}} = CouncilEx.run(@mod, "x", user_opts: [retry: {2, 0}])
  end

  test "the providers' configuration is read on every start of a module" do
    compile!("""
    use CouncilEx
    member :m, provider: :openai, base_url: "http://127.0.0.1:9/v1"
    round :independent_analysis
    """)

    missing = {:error, {:invalid_council, [%{path: "members[0].options.model"}]}}
    assert match?(^missing, strip(CouncilEx.start(@mod, "x")))

    Application.put_env(:council_ex, :providers, openai: [model: "configured"])
    assert {:ok, pid} = CouncilEx.start(@mod, "x")
    assert :ok = CouncilEx.cancel(pid)

    Application.delete_env(:council_ex, :providers)
    assert match?(^missing, strip(CouncilEx.start(@mod, "x")))
  end

  # ------------------------------------------------- %CouncilEx.Spec{}

  # (a struct is looked up by its whole self, as a module's spec is)

  test "a %CouncilEx.Spec{} changed by hand after it started is checked as it is now" do
    {:ok, spec} =
      CouncilEx.DynamicCouncil.to_spec(%{
        "id" => "map",
        "members" => [%{"id" => "m", "provider" => "mock"}],
        "rounds" => [%{"type" => "independent_analysis"}]
      })

    assert answered_by(spec) == ["m"]
    assert answered_by(spec) == ["m"]

    invalid =
      {:error,
       {:invalid_council,
        [
          %{
            path: "rounds",
            code: :invalid_spec,
            message: "empty (a council needs at least one round)"
          }
        ]}}

    assert refusals(%{spec | rounds: []}) == List.duplicate(invalid, 4)
    assert refusals(%{spec | rounds: []}) == List.duplicate(invalid, 4)

    renamed = %{spec | members: [%{hd(spec.members) | id: "n"}]}

    assert [{:error, {:invalid_council, [%{path: "rounds[0].options.members[0]"}]}} | _] =
             refusals(%{renamed | rounds: [%{hd(spec.rounds) | options: %{"members" => ["m"]}}]})

    assert answered_by(renamed) == ["n"]
    assert answered_by(spec) == ["m"]

    # an option with no JSON form, added by hand
    bad = %{spec | members: [%{hd(spec.members) | options: %{"x" => {1, 2}}}]}

    for _ <- 1..2 do
      assert_raise ArgumentError, ~r/cannot encode as JSON/, fn -> CouncilEx.start(bad, "x") end
    end
  end

  test "a %CouncilEx.Spec{} whose sub-council is a module starts with the module's current spec" do
    # a hand-built member whose nested spec is still the module (new/1
    # would have put the module's spec in its place): each start reads it
    spec = %CouncilEx.Spec{
      id: "parent",
      members: [
        %CouncilEx.Spec.Member{
          id: "sub",
          provider: :council,
          options: %{"spec" => @mod},
          tools: %{}
        }
      ],
      rounds: [
        %CouncilEx.Spec.Round{
          type: :independent_analysis,
          name: "independent_analysis",
          options: %{}
        }
      ]
    }

    dsl(:alpha)
    assert answered_by(spec) == ["alpha"]
    dsl(:beta)
    assert answered_by(spec) == ["beta"]
  end

  # {:invalid_council, [error]} with the error's path only
  defp strip({:error, {:invalid_council, [%{path: path}]}}),
    do: {:error, {:invalid_council, [%{path: path}]}}

  defp strip(other), do: other

  test "the specs remembered hold a bounded amount of JSON, whatever the specs' size" do
    # 48 distinct specs of ~256 KB of JSON each (12 MB in all): the table
    # keeps at most its byte budget of them (8 MB) and still serves them
    big = String.duplicate("word ", 52_000)

    specs =
      for i <- 1..48 do
        spec =
          CouncilEx.Spec.new!(
            id: "big#{i}",
            members: [[id: :a, provider: :mock]],
            rounds: [[type: :independent_analysis, instructions: big]]
          )

        assert {:ok, json} = CouncilEx.Spec.checked_json(spec)
        assert byte_size(json) > 256_000
        assert {:ok, ^json} = CouncilEx.Spec.checked_json(spec)
        spec
      end

    # the last one is kept (the table makes room for it)
    assert [{_, _}] = :ets.lookup(CouncilEx.Spec.Memo, List.last(specs))

    kept =
      for {%CouncilEx.Spec{}, json} <- :ets.tab2list(CouncilEx.Spec.Memo),
          reduce: 0,
          do: (n -> n + byte_size(json))

    assert kept > 0 and kept <= 8 * 1024 * 1024
  end
end
