process.env.NO_COLOR = "1";
