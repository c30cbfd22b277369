// A real workload for `wpcompare capture` (README, "A real application: a JVM heap"):
// build a HashMap of N entries, then query it at random keys for SECONDS seconds.
// The capture takes its snapshot while the queries run; what the queries touch
// afterwards (map nodes, keys, values, the young generation they allocate in) is
// the trace.
import java.util.HashMap;

public class MapWorkload {
    public static void main(String[] args) {
        int entries = args.length > 0 ? Integer.parseInt(args[0]) : 300_000;
        double seconds = args.length > 1 ? Double.parseDouble(args[1]) : 30.0;
        HashMap<Integer, String> map = new HashMap<>();
        for (int i = 0; i < entries; i++)
            map.put(i, "value-" + i);
        System.out.println("built " + map.size() + " entries");
        System.out.flush();

        long state = 1;
        long found = 0;
        long queries = 0;
        long end = System.nanoTime() + (long) (seconds * 1e9);
        while (System.nanoTime() < end) {
            for (int i = 0; i < 1000; i++) {
                state = state * 6364136223846793005L + 1442695040888963407L;
                String value = map.get((int) ((state >>> 33) % entries));
                if (value != null)
                    found += value.length();
            }
            queries += 1000;
        }
        System.out.println(queries + " queries, " + found + " bytes found");
    }
}
