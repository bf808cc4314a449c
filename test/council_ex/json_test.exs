defmodule CouncilEx.JSONTest do
  # CouncilEx.JSON is the library's own JSON (no NIF, no system package).
  # Explicit cases for what JSON gets wrong most often (escapes, surrogate
  # pairs, numbers, UTF-8), a randomized round trip, and, where jiffy
  # happens to be installed, the same decoding as jiffy on valid input.
  use ExUnit.Case, async: true
  import Bitwise
  alias CouncilEx.JSON

  doctest CouncilEx.JSON

  describe "decode" do
    test "scalars, arrays, objects; null is nil; whitespace around" do
      assert JSON.decode(" true ") == {:ok, true}
      assert JSON.decode("false") == {:ok, false}
      assert JSON.decode("null") == {:ok, nil}
      assert JSON.decode("\t\r\n[ ]\n") == {:ok, []}
      assert JSON.decode("{}") == {:ok, %{}}
      assert JSON.decode(~s({"a": {"b": [1, [2, {}]]}, "c": "d"})) ==
               {:ok, %{"a" => %{"b" => [1, [2, %{}]]}, "c" => "d"}}
    end

    test "numbers: integers of any size, floats from fractions and exponents" do
      assert JSON.decode("0") == {:ok, 0}
      assert JSON.decode("-0") == {:ok, 0}
      assert JSON.decode("-12") == {:ok, -12}
      big = "123456789012345678901234567890123456789"
      assert JSON.decode(big) == {:ok, String.to_integer(big)}
      assert JSON.decode("1.5") == {:ok, 1.5}
      assert JSON.decode("-0.0") == {:ok, -0.0}
      assert JSON.decode("1e2") == {:ok, 100.0}
      assert JSON.decode("1E+2") == {:ok, 100.0}
      assert JSON.decode("2.5e-3") == {:ok, 0.0025}
      assert JSON.decode("1.7976931348623157e308") == {:ok, 1.7976931348623157e308}
      assert JSON.decode("5e-324") == {:ok, 5.0e-324}
      assert {:error, {0, :number_out_of_range}} = JSON.decode("1e400")

      for bad <- ["01", "1.", ".5", "+1", "1e", "1e+", "-", "--1", "0x10", "1.e3", "NaN", "Infinity"] do
        assert {:error, {_, _}} = JSON.decode(bad), bad
      end
    end

    test "escapes, \\u escapes and surrogate pairs" do
      assert JSON.decode(~S("\"\\\/\b\f\n\r\t")) == {:ok, "\"\\/\b\f\n\r\t"}
      assert JSON.decode(~S("\u0041\u00e9\u20AC")) == {:ok, "Aé€"}
      assert JSON.decode(~S("\u0000")) == {:ok, <<0>>}
      # U+1F600 as a surrogate pair, upper and lower case hex
      assert JSON.decode(~S("\ud83d\ude00")) == {:ok, "😀"}
      assert JSON.decode(~S("\uD834\uDD1E!")) == {:ok, "𝄞!"}
      # raw UTF-8 passes through
      assert JSON.decode(~s("日本語 😀")) == {:ok, "日本語 😀"}

      assert {:error, {1, :lone_surrogate}} = JSON.decode(~S("\ud83d"))
      assert {:error, {1, :lone_surrogate}} = JSON.decode(~S("\ud83dx"))
      assert {:error, {1, :lone_surrogate}} = JSON.decode(~S("\ud83d\u0041"))
      assert {:error, {1, :lone_surrogate}} = JSON.decode(~S("\ude00"))
      assert {:error, {1, :invalid_escape}} = JSON.decode(~S("\x"))
      assert {:error, {1, :invalid_escape}} = JSON.decode(~S("\u12G4"))
      assert {:error, {1, :invalid_escape}} = JSON.decode(~S("\u12"))
    end

    test "refuses invalid UTF-8, raw control characters, unterminated strings" do
      assert {:error, {_, :invalid_utf8}} = JSON.decode(<<?", 0xFF, ?">>)
      assert {:error, {_, :invalid_utf8}} = JSON.decode(<<?", 0xC3, ?">>)
      # an encoded surrogate (CESU) is not UTF-8
      assert {:error, {_, :invalid_utf8}} = JSON.decode(<<?", 0xED, 0xA0, 0x80, ?">>)
      assert {:error, {1, :control_character_in_string}} = JSON.decode(~s("\n"))
      assert {:error, {_, :unterminated_string}} = JSON.decode(~s("abc))
      assert {:error, {_, :unterminated_string}} = JSON.decode(~S("abc\"))
    end

    test "structure errors carry the byte offset" do
      assert {:error, {3, :unexpected_byte}} = JSON.decode("[1,]")
      assert {:error, {1, :expected_key}} = JSON.decode("{,}")
      assert {:error, {5, :expected_colon}} = JSON.decode(~s({"a" 1}))
      assert {:error, {7, :expected_comma_or_brace}} = JSON.decode(~s({"a":1 "b":2}))
      assert {:error, {3, :expected_comma_or_bracket}} = JSON.decode("[1 2]")
      assert {:error, {5, :trailing_data}} = JSON.decode("true x")
      assert {:error, {0, :unexpected_end}} = JSON.decode("")
      assert {:error, {0, :unexpected_byte}} = JSON.decode("nul")
      assert {:error, {0, :unexpected_byte}} = JSON.decode("'a'")
    end

    test "a later duplicate key wins" do
      assert JSON.decode(~s({"a":1,"a":2})) == {:ok, %{"a" => 2}}
    end

    test "deep nesting" do
      deep = String.duplicate("[", 10_000) <> String.duplicate("]", 10_000)
      assert {:ok, [[[_]]]} = JSON.decode(deep)
    end
  end

  describe "encode" do
    test "maps with atom or binary keys, lists, scalars; nil is null" do
      assert JSON.encode(%{}) == {:ok, "{}"}
      assert JSON.encode([]) == {:ok, "[]"}
      assert JSON.encode(nil) == {:ok, "null"}
      assert JSON.encode([true, false, nil, 1, -2, 1.5]) == {:ok, "[true,false,null,1,-2,1.5]"}
      assert JSON.encode(%{a: 1}) == {:ok, ~s({"a":1})}
      assert JSON.encode(%{"a" => [1]}) == {:ok, ~s({"a":[1]})}
      assert JSON.encode(:mock) == {:ok, ~s("mock")}
      assert JSON.encode({[{:a, 1}, {"b", 2}]}) == {:ok, ~s({"a":1,"b":2})}
      assert JSON.encode(12_345_678_901_234_567_890) == {:ok, "12345678901234567890"}
    end

    test "floats in their shortest form, which read back the same" do
      for f <- [0.1, 1.0, -0.0, 1.0e20, 1.0e-300, 5.0e-324, 1.7976931348623157e308, 2 / 3] do
        {:ok, json} = JSON.encode(f)
        assert JSON.decode(json) == {:ok, f}, json
      end

      assert JSON.encode(0.1) == {:ok, "0.1"}
    end

    test "strings: quote, backslash and control characters escaped, the rest as is" do
      assert JSON.encode("a\"b\\c") == {:ok, ~S("a\"b\\c")}
      assert JSON.encode("\n\r\t\b\f") == {:ok, ~S("\n\r\t\b\f")}
      assert JSON.encode(<<0, 1, 0x1F, 0x7F>>) == {:ok, ~s("\\u0000\\u0001\\u001F\x7F")}
      assert JSON.encode("é€😀 / </script>") == {:ok, ~s("é€😀 / </script>")}
    end

    test "what has no JSON form is an error (encode!/1 raises)" do
      assert {:error, {:invalid_string, <<0xFF>>}} = JSON.encode(<<0xFF>>)
      assert {:error, {:invalid_ejson, {1, 2}}} = JSON.encode({1, 2})
      assert {:error, {:invalid_ejson, _}} = JSON.encode([self()])
      assert {:error, {:invalid_ejson, _}} = JSON.encode(%{a: fn -> 1 end})
      assert {:error, {:invalid_object_key, 1}} = JSON.encode(%{1 => 2})
      assert {:error, {:invalid_ejson, _}} = JSON.encode([1 | 2])
      assert_raise ArgumentError, ~r/cannot encode as JSON/, fn -> JSON.encode!({1, 2}) end
    end
  end

  # Random JSON values: strings over the whole Unicode range (surrogate
  # pairs when escaped), every control character, big integers, floats.
  defp gen(0), do: gen_scalar()

  defp gen(depth) do
    case :rand.uniform(6) do
      1 -> for _ <- 1..:rand.uniform(4), do: gen(depth - 1)
      2 -> Map.new(1..:rand.uniform(4), fn _ -> {gen_string(), gen(depth - 1)} end)
      _ -> gen_scalar()
    end
  end

  defp gen_scalar do
    case :rand.uniform(7) do
      1 -> nil
      2 -> :rand.uniform(2) == 1
      3 -> :rand.uniform(1 <<< 70) - (1 <<< 69)
      4 -> (:rand.uniform() - 0.5) * :math.pow(10, :rand.uniform(600) - 300)
      _ -> gen_string()
    end
  end

  defp gen_string do
    for _ <- 0..:rand.uniform(12), into: "" do
      cp =
        case :rand.uniform(5) do
          1 -> :rand.uniform(0x20) - 1
          2 -> Enum.random([?", ?\\, ?/, 0x7F, 0x2028])
          3 -> 0x10000 + :rand.uniform(0x10FFFF - 0x10000)
          _ -> Enum.random([:rand.uniform(0x7E), 0x80 + :rand.uniform(0xD7FF - 0x80)])
        end

      <<cp::utf8>>
    end
  end

  # The same string, every character as a \u escape (pairs above U+FFFF).
  defp escape_all(s) do
    for <<cp::utf8 <- s>>, into: "" do
      if cp > 0xFFFF do
        v = cp - 0x10000
        u4(0xD800 + (v >>> 10)) <> u4(0xDC00 + (v &&& 0x3FF))
      else
        u4(cp)
      end
    end
  end

  defp u4(n), do: "\\u" <> String.pad_leading(Integer.to_string(n, 16), 4, "0")

  test "random values round trip; \\u-escaped strings decode to the same" do
    :rand.seed(:exsss, {1, 2, 3})

    for _ <- 1..400 do
      v = gen(4)
      assert {:ok, json} = JSON.encode(v)
      assert JSON.decode(json) == {:ok, v}
      assert String.valid?(json)

      s = gen_string()
      assert JSON.decode(~s(") <> escape_all(s) <> ~s(")) == {:ok, s}
    end
  end

  if Code.ensure_loaded?(:jiffy) do
    test "decodes as jiffy does (jiffy is installed here, not needed)" do
      :rand.seed(:exsss, {4, 5, 6})

      for _ <- 1..300 do
        json = :jiffy.encode(gen(4), [:use_nil])
        json = IO.iodata_to_binary(json)
        assert JSON.decode(json) == {:ok, :jiffy.decode(json, [:return_maps, :use_nil])}
      end
    end
  end
end
