defmodule CouncilEx.UserOptsTest do
  # A run's :user_opts reach its Elixir-module members untouched (SPEC §3:
  # user_opts belong to the run), through the C node's beam provider.
  use ExUnit.Case, async: false

  alias CouncilEx.Test.UserOptsCouncil

  test "a member module gets the run's user_opts as given, any term" do
    opts = %{model: "gpt-x", temperature: 0.2, tags: [:a, {:b, 1}], self: self()}
    assert {:ok, %{final: final}} = CouncilEx.run(UserOptsCouncil, "q", user_opts: opts)
    assert final == inspect(opts)
  end

  test "no user_opts: the member sees nil" do
    assert {:ok, %{final: "nil"}} = CouncilEx.run(UserOptsCouncil, "q")
  end
end
